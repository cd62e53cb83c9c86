package warren

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Config and registry files are read strictly: a misspelt field, a field given
// twice, a value of the wrong type or data after the document is an error that
// names the field's path, such as "clients[3].security.ipBlockLst".
//
// encoding/json alone cannot do this: DisallowUnknownFields does not reach
// into a type with its own UnmarshalJSON (ClientEntry, for its "tags" alias),
// and its errors carry no path. So decodeStrict first walks the document
// against the Go type, checking every object's keys and decoding every leaf on
// its own to name the field that fails, then decodes it as usual.

var (
	jsonUnmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	keyType             = reflect.TypeFor[Key]()
	entryType           = reflect.TypeFor[ClientEntry]()
)

// jsonAliases are further names a type reads for one of its fields.
var jsonAliases = map[reflect.Type]map[string]string{
	entryType: {"tags": "serverDefinedClientTags"},
}

// jsonTextRefs are the string fields of a type that, in a config file, may
// name where their text is ("file:PATH", "${NAME}") as a key field may; the
// value is what the text is, for errors.
var jsonTextRefs = map[reflect.Type]map[string]string{
	reflect.TypeFor[ServerConfig](): {"bundleServerCa": "CA certificate"},
	reflect.TypeFor[ClientConfig](): {"serverCa": "CA certificate"},
}

// decodeStrict decodes data, the content of file, into v (a pointer to a
// struct). data must be exactly one JSON object. Errors are *ConfigError with
// File set.
func decodeStrict(file string, data []byte, v any) error {
	return decodeJSON(file, data, v, jsonWalk{})
}

// decodeConfigFile is decodeStrict for a config file the operator wrote: a
// key field may also hold a reference to where the key is (see
// resolveKeyRef). Registry files and admin requests do not resolve them, so
// only whoever writes the config file can make the hub read a file or its
// environment.
func decodeConfigFile(file string, data []byte, v any) error {
	return decodeJSON(file, data, v, jsonWalk{keyRefs: true, dir: filepath.Dir(file)})
}

func decodeJSON(file string, data []byte, v any, w jsonWalk) error {
	fail := func(field, reason string) error {
		return &ConfigError{File: file, Field: field, Reason: reason}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		var se *json.SyntaxError
		switch {
		case errors.Is(err, io.EOF):
			return fail("", "empty file: want a JSON object")
		case errors.As(err, &se):
			return fail("", where(data, int(se.Offset))+": "+se.Error())
		case errors.Is(err, io.ErrUnexpectedEOF):
			return fail("", "the JSON document is cut short")
		}
		return fail("", err.Error())
	}
	end := int(dec.InputOffset())
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		rest := len(data) - len(bytes.TrimLeft(data[end:], " \t\r\n"))
		return fail("", where(data, rest+1)+": data after the JSON object")
	}
	resolved, err := w.check("", raw, reflect.TypeOf(v).Elem())
	if err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			ce.File = file
		}
		return err
	}
	if resolved != nil {
		raw = resolved
	}
	// The walk above accepts only what this decode reads, so it fails only
	// for what the walk does not model; keep the check anyway.
	dec = json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fail("", err.Error())
	}
	return nil
}

// where gives the 1-based line and column of byte offset off-1 in data.
func where(data []byte, off int) string {
	off = min(max(off-1, 0), len(data))
	line := 1 + bytes.Count(data[:off], []byte{'\n'})
	col := off - bytes.LastIndexByte(data[:off], '\n')
	return fmt.Sprintf("line %d, column %d", line, col)
}

// jsonWalk checks a JSON document against a Go type. With keyRefs set it
// also resolves key references, relative file names against dir.
type jsonWalk struct {
	keyRefs bool
	dir     string
}

// check checks raw, a valid JSON value at path, against type t. It returns
// raw rewritten when it resolved a key reference inside, else nil.
func (w jsonWalk) check(path string, raw []byte, t reflect.Type) ([]byte, error) {
	raw = bytes.TrimSpace(raw)
	if string(raw) == "null" {
		return nil, nil // encoding/json leaves the zero value
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == keyType && w.keyRefs {
		return w.key(path, raw)
	}
	pt := reflect.PointerTo(t)
	if t != entryType && (pt.Implements(jsonUnmarshalerType) || pt.Implements(textUnmarshalerType)) {
		return nil, checkLeaf(path, raw, t)
	}
	switch t.Kind() {
	case reflect.Struct:
		return w.object(path, raw, t)
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return nil, checkLeaf(path, raw, t) // base64
		}
		return w.array(path, raw, t.Elem())
	case reflect.Map:
		return w.mapping(path, raw, t)
	}
	return nil, checkLeaf(path, raw, t)
}

// key checks a key field, resolving a reference to the key it names.
func (w jsonWalk) key(path string, raw []byte) ([]byte, error) {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return nil, checkLeaf(path, raw, keyType)
	}
	if !isKeyRef(s) {
		return nil, checkLeaf(path, raw, keyType)
	}
	k, err := resolveKeyRef(s, w.dir)
	if err != nil {
		// s is the reference, not the key: safe to show.
		return nil, &ConfigError{Field: path, Value: s, Reason: err.Error()}
	}
	return json.Marshal(k.String())
}

// textRef checks a string field of jsonTextRefs, resolving a reference to
// the text it names.
func (w jsonWalk) textRef(path string, raw []byte, what string) ([]byte, error) {
	var s string
	if json.Unmarshal(bytes.TrimSpace(raw), &s) != nil || !isKeyRef(s) {
		return nil, checkLeaf(path, raw, reflect.TypeFor[string]())
	}
	text, _, err := readRef(s, w.dir, what)
	if err != nil {
		return nil, &ConfigError{Field: path, Value: s, Reason: err.Error()}
	}
	return json.Marshal(text)
}

// jsonField is a struct field as encoding/json names it.
type jsonField struct {
	name string
	typ  reflect.Type
}

// jsonFields lists the fields encoding/json decodes into t.
func jsonFields(t reflect.Type) []jsonField {
	var out []jsonField
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				out = append(out, jsonFields(ft)...)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, jsonField{name, f.Type})
	}
	return out
}

// lookupField finds the field key names, as encoding/json does: an exact
// match first, then one that differs only in case. Aliases resolve to the
// field they stand for.
func lookupField(fields []jsonField, aliases map[string]string, key string) (jsonField, bool) {
	find := func(match func(a, b string) bool) (jsonField, bool) {
		for _, f := range fields {
			if match(f.name, key) {
				return f, true
			}
		}
		for alias, name := range aliases {
			if match(alias, key) {
				for _, f := range fields {
					if f.name == name {
						return f, true
					}
				}
			}
		}
		return jsonField{}, false
	}
	if f, ok := find(func(a, b string) bool { return a == b }); ok {
		return f, true
	}
	return find(strings.EqualFold)
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (w jsonWalk) object(path string, raw []byte, t reflect.Type) ([]byte, error) {
	if raw[0] != '{' {
		return nil, wrongType(path, raw, t)
	}
	fields := jsonFields(t)
	aliases := jsonAliases[t]
	seen := make(map[string]string) // field name -> key as written
	var members membersOut
	err := eachMember(raw, func(key string, val []byte) error {
		f, ok := lookupField(fields, aliases, key)
		if !ok {
			return &ConfigError{Field: joinPath(path, key), Reason: unknownField(key, fields)}
		}
		if prev, dup := seen[f.name]; dup {
			reason := "given more than once"
			if prev != key {
				reason = fmt.Sprintf("given more than once (as %q and %q)", prev, key)
			}
			return &ConfigError{Field: joinPath(path, f.name), Reason: reason}
		}
		seen[f.name] = key
		if what := jsonTextRefs[t][f.name]; what != "" && w.keyRefs {
			out, err := w.textRef(joinPath(path, key), val, what)
			members.add(key, val, out)
			return err
		}
		out, err := w.check(joinPath(path, key), val, f.typ)
		members.add(key, val, out)
		return err
	})
	return members.object(), err
}

func (w jsonWalk) mapping(path string, raw []byte, t reflect.Type) ([]byte, error) {
	if raw[0] != '{' {
		return nil, wrongType(path, raw, t)
	}
	var members membersOut
	err := eachMember(raw, func(key string, val []byte) error {
		out, err := w.check(joinPath(path, key), val, t.Elem())
		members.add(key, val, out)
		return err
	})
	return members.object(), err
}

func (w jsonWalk) array(path string, raw []byte, elem reflect.Type) ([]byte, error) {
	if raw[0] != '[' {
		return nil, wrongType(path, raw, reflect.SliceOf(elem))
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	var elems membersOut
	for i := 0; dec.More(); i++ {
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return nil, err
		}
		out, err := w.check(fmt.Sprintf("%s[%d]", path, i), val, elem)
		if err != nil {
			return nil, err
		}
		elems.add("", val, out)
	}
	return elems.array(), nil
}

// membersOut collects an object's members or an array's elements as
// checked, to write the value again when a key reference inside was resolved.
type membersOut struct {
	keys    []string
	vals    [][]byte
	changed bool
}

func (m *membersOut) add(key string, val, out []byte) {
	if out != nil {
		val, m.changed = out, true
	}
	m.keys = append(m.keys, key)
	m.vals = append(m.vals, val)
}

// object is the members as a JSON object, or nil when none changed.
func (m *membersOut) object() []byte {
	if !m.changed {
		return nil
	}
	b := []byte{'{'}
	for i, k := range m.keys {
		if i > 0 {
			b = append(b, ',')
		}
		q, _ := json.Marshal(k) // a string always marshals
		b = append(append(append(b, q...), ':'), m.vals[i]...)
	}
	return append(b, '}')
}

// array is the elements as a JSON array, or nil when none changed.
func (m *membersOut) array() []byte {
	if !m.changed {
		return nil
	}
	return append(append([]byte{'['}, bytes.Join(m.vals, []byte{','})...), ']')
}

// eachMember calls fn for every member of the JSON object raw, in order.
func eachMember(raw []byte, fn func(key string, val []byte) error) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil {
		return err
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
		if err := fn(key, val); err != nil {
			return err
		}
	}
	return nil
}

// checkLeaf decodes raw into a fresh value of type t, so a failure names path.
func checkLeaf(path string, raw []byte, t reflect.Type) error {
	err := json.Unmarshal(raw, reflect.New(t).Interface())
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return wrongType(path, raw, t)
	}
	ce := &ConfigError{Field: path, Reason: strings.TrimPrefix(err.Error(), "warren: ")}
	if t != keyType { // a key may be a private one: never echo it
		ce.Value = leafText(raw)
	}
	return ce
}

func wrongType(path string, raw []byte, t reflect.Type) error {
	ce := &ConfigError{Field: path, Reason: "want " + describeType(t)}
	if t != keyType {
		ce.Value = leafText(raw)
	}
	return ce
}

// describeType says what JSON value t takes.
func describeType(t reflect.Type) string {
	if reflect.PointerTo(t).Implements(textUnmarshalerType) {
		return "a string"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer in range"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer in range"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a JSON array"
	case reflect.Struct, reflect.Map:
		return "a JSON object"
	}
	return t.String()
}

// leafText is raw as shown in an error: a string unquoted, anything else as
// written, cut to a readable length.
func leafText(raw []byte) string {
	s := string(raw)
	if u, err := strconv.Unquote(s); err == nil && len(raw) > 0 && raw[0] == '"' {
		s = u
	}
	if len(s) > 64 {
		cut := 64
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// unknownField is the reason for a key no field has, with the nearest field
// name when one is close enough to be a typo of it.
func unknownField(key string, fields []jsonField) string {
	best, bestD := "", -1
	for _, f := range fields {
		d := editDistance(strings.ToLower(key), strings.ToLower(f.name))
		if bestD < 0 || d < bestD {
			best, bestD = f.name, d
		}
	}
	if bestD >= 0 && bestD <= max(2, len(best)/3) {
		return fmt.Sprintf("unknown field; did you mean %q?", best)
	}
	return "unknown field"
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
