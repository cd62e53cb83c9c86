package warren

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// fileStoreVersion is the version of the JSON document a FileStore writes.
const fileStoreVersion = 1

// fileStoreDoc is the JSON document a FileStore keeps on disk.
type fileStoreDoc struct {
	Version int           `json:"version"`
	Clients []ClientEntry `json:"clients"`
}

// FileStore is a Store that keeps the registry in one JSON file,
// {"version":1,"clients":[...]}, with the clients sorted by clientId.
//
// The entries are held in memory; every Put or Delete rewrites the whole file
// atomically: a temporary file in the same directory is written, synced and
// renamed over the path, and the directory is synced. A crash at any point
// leaves the old registry or the new one, never a torn file. A Put or Delete
// whose write fails returns the error and changes nothing.
//
// The file is created on the first write, with mode 0600; its directory must
// exist by then and is never created. One FileStore owns its file: several FileStores, in one
// process or several, must not share a path. A crash can leave a temporary file
// named ".<name>.tmp-*" beside the registry; it is never read and may be removed.
// FileStore is safe for concurrent use.
type FileStore struct {
	path string

	mu      sync.Mutex
	entries map[string]ClientEntry
	// encoded holds each entry's JSON, so a write encodes only what changed.
	encoded map[string][]byte
}

// NewFileStore opens the registry file at path. A missing (or empty) file is an
// empty registry; a file that cannot be read or parsed is an error naming path.
// It is read as strictly as a config file (a *ConfigError naming the field):
// a field this version does not know would otherwise be lost on the next write.
func NewFileStore(path string) (*FileStore, error) {
	if path == "" {
		return nil, errors.New("warren: file store: empty path")
	}
	s := &FileStore{
		path:    path,
		entries: make(map[string]ClientEntry),
		encoded: make(map[string][]byte),
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("warren: file store: reading %s: %w", path, err)
	case len(bytes.TrimSpace(b)) == 0:
		return s, nil
	}
	var doc fileStoreDoc
	if err := decodeStrict(path, b, &doc); err != nil {
		return nil, err
	}
	if doc.Version != fileStoreVersion {
		return nil, fmt.Errorf("warren: file store: %s: unsupported version %d (want %d)", path, doc.Version, fileStoreVersion)
	}
	for i, e := range doc.Clients {
		if e.ClientID == "" {
			return nil, fmt.Errorf("warren: file store: %s: clients[%d] has no clientId", path, i)
		}
		if _, dup := s.entries[e.ClientID]; dup {
			return nil, fmt.Errorf("warren: file store: %s: clients[%d]: duplicate clientId %q", path, i, e.ClientID)
		}
		enc, err := encodeEntry(e)
		if err != nil {
			return nil, fmt.Errorf("warren: file store: %s: clients[%d]: %w", path, i, err)
		}
		s.entries[e.ClientID] = e
		s.encoded[e.ClientID] = enc
	}
	return s, nil
}

// Path returns the path of the registry file.
func (s *FileStore) Path() string { return s.path }

// Load returns a copy of every entry, sorted by ClientID.
func (s *FileStore) Load(ctx context.Context) ([]ClientEntry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return sortedEntries(s.entries), nil
}

// Put stores a copy of e, replacing any entry with the same ClientID, and
// writes the registry file before it returns.
func (s *FileStore) Put(ctx context.Context, e ClientEntry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkStoreID(e.ClientID); err != nil {
		return err
	}
	e = e.clone()
	enc, err := encodeEntry(e)
	if err != nil {
		return fmt.Errorf("warren: file store: encoding client %q: %w", e.ClientID, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, existed := s.entries[e.ClientID]
	oldEnc := s.encoded[e.ClientID]
	s.entries[e.ClientID] = e
	s.encoded[e.ClientID] = enc
	if err := s.persist(); err != nil {
		if existed {
			s.entries[e.ClientID] = old
			s.encoded[e.ClientID] = oldEnc
		} else {
			delete(s.entries, e.ClientID)
			delete(s.encoded, e.ClientID)
		}
		s.restore(err)
		return err
	}
	return nil
}

// Delete removes the entry with that ClientID and writes the registry file
// before it returns; deleting a missing entry is not an error and writes nothing.
func (s *FileStore) Delete(ctx context.Context, clientID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, existed := s.entries[clientID]
	if !existed {
		return nil
	}
	oldEnc := s.encoded[clientID]
	delete(s.entries, clientID)
	delete(s.encoded, clientID)
	if err := s.persist(); err != nil {
		s.entries[clientID] = old
		s.encoded[clientID] = oldEnc
		s.restore(err)
		return err
	}
	return nil
}

// syncDirError is a write that failed after its rename: the new file is in
// place but the directory entry may not be durable.
type syncDirError struct {
	dir string
	err error
}

func (e *syncDirError) Error() string { return "syncing directory " + e.dir + ": " + e.err.Error() }
func (e *syncDirError) Unwrap() error { return e.err }

// persist writes s.entries to the file. s.mu is held.
func (s *FileStore) persist() error {
	if err := writeFileAtomic(s.path, s.marshal()); err != nil {
		return fmt.Errorf("warren: file store: writing %s: %w", s.path, err)
	}
	return nil
}

// restore is called, with s.mu held, after persist failed with err and
// s.entries was rolled back. A failure before the rename left the old file
// untouched. A failure after it (syncing the directory) left the new document in
// place; then the rolled-back one is written again, best effort, so the file
// keeps matching memory.
func (s *FileStore) restore(err error) {
	var sde *syncDirError
	if !errors.As(err, &sde) {
		return
	}
	_ = writeFileAtomic(s.path, s.marshal())
}

// marshal returns the document for s.encoded, indented as json.MarshalIndent
// with "  " would; s.mu is held.
func (s *FileStore) marshal() []byte {
	ids := make([]string, 0, len(s.encoded))
	n := 64
	for id, enc := range s.encoded {
		ids = append(ids, id)
		n += len(enc) + 8
	}
	slices.Sort(ids)
	b := make([]byte, 0, n)
	b = fmt.Appendf(b, "{\n  \"version\": %d,\n  \"clients\": [", fileStoreVersion)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, "\n    "...)
		b = append(b, s.encoded[id]...)
	}
	if len(ids) > 0 {
		b = append(b, "\n  "...)
	}
	return append(b, "]\n}\n"...)
}

// encodeEntry encodes e as it appears inside the document's clients array.
func encodeEntry(e ClientEntry) ([]byte, error) {
	return json.MarshalIndent(e, "    ", "  ")
}

// writeFileAtomic replaces path with data: temporary file in the same
// directory, write, fsync, close, rename over path, fsync the directory.
func writeFileAtomic(path string, data []byte) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	closed := false
	defer func() {
		if err != nil {
			if !closed {
				f.Close()
			}
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	closed = true
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	if serr := syncDir(dir); serr != nil {
		return &syncDirError{dir: dir, err: serr}
	}
	return nil
}

// syncDir fsyncs a directory so a rename in it survives a power loss.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
