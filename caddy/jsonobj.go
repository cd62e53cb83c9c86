package caddy

import (
	"bytes"
	"encoding/json"
	"errors"
)

// eachMember calls fn for every member of the JSON object b, in order.
func eachMember(b []byte, fn func(key string, val []byte)) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return errors.New("want a JSON object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return err
		}
		fn(key, val)
	}
	if _, err := dec.Token(); err != nil {
		return err
	}
	if _, err := dec.Token(); err == nil {
		return errors.New("data after the JSON object")
	}
	return nil
}

// splitObject splits the JSON object b in two: the members whose keys are in
// own, and the others, each as a JSON object in the order written.
func splitObject(b []byte, own map[string]bool) (mine, rest []byte, err error) {
	var m, r objectWriter
	err = eachMember(b, func(key string, val []byte) {
		if own[key] {
			m.add(key, val)
		} else {
			r.add(key, val)
		}
	})
	if err != nil {
		return nil, nil, err
	}
	return m.bytes(), r.bytes(), nil
}

// mergeObjects joins the members of JSON objects into one object; an empty
// input counts as an empty object.
func mergeObjects(objs ...[]byte) ([]byte, error) {
	var w objectWriter
	for _, o := range objs {
		if len(bytes.TrimSpace(o)) == 0 {
			continue
		}
		if err := eachMember(o, w.add); err != nil {
			return nil, err
		}
	}
	return w.bytes(), nil
}

// objectWriter builds a JSON object member by member.
type objectWriter struct{ buf bytes.Buffer }

func (w *objectWriter) add(key string, val []byte) {
	if w.buf.Len() == 0 {
		w.buf.WriteByte('{')
	} else {
		w.buf.WriteByte(',')
	}
	k, _ := json.Marshal(key) // a string always marshals
	w.buf.Write(k)
	w.buf.WriteByte(':')
	w.buf.Write(val)
}

func (w *objectWriter) bytes() []byte {
	if w.buf.Len() == 0 {
		return []byte("{}")
	}
	return append(w.buf.Bytes(), '}')
}
