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
// The entries are held in memory; every write rewrites the whole file
// atomically: a temporary file in the same directory is written, synced and
// renamed over the path, and the directory is synced. A crash at any point
// leaves the old registry or the new one, never a torn file. A write that
// fails returns the error and changes nothing.
//
// FileStore is a VersionedStore and a WatchableStore: its versions count its
// writes since it was opened (they are not kept in the file), and Watch
// reports the writes made through it.
//
// The file is created on the first write, with mode 0600; its directory must
// exist by then and is never created. One FileStore owns its file: several FileStores, in one
// process or several, must not share a path. A crash can leave a temporary file
// named ".<name>.tmp-*" beside the registry; it is never read and may be removed.
// FileStore is safe for concurrent use.
type FileStore struct {
	path string

	mu sync.Mutex
	t  table
	// encoded holds each entry's JSON, so a write encodes only what changed.
	encoded map[string][]byte
}

var (
	_ VersionedStore = (*FileStore)(nil)
	_ WatchableStore = (*FileStore)(nil)
)

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
		encoded: make(map[string][]byte),
	}
	s.t.init()
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
		if _, dup := s.t.entries[e.ClientID]; dup {
			return nil, fmt.Errorf("warren: file store: %s: clients[%d]: duplicate clientId %q", path, i, e.ClientID)
		}
		enc, err := encodeEntry(e)
		if err != nil {
			return nil, fmt.Errorf("warren: file store: %s: clients[%d]: %w", path, i, err)
		}
		s.t.set(e)
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
	return s.t.sorted(), nil
}

// LoadVersions returns a copy of every entry with its version, sorted by ClientID.
func (s *FileStore) LoadVersions(ctx context.Context) ([]StoredEntry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t.sortedVersions(), nil
}

// Get returns a copy of one entry and its version.
func (s *FileStore) Get(ctx context.Context, clientID string) (StoredEntry, error) {
	if err := ctx.Err(); err != nil {
		return StoredEntry{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t.get(clientID)
}

// Put stores a copy of e, replacing any entry with the same ClientID, and
// writes the registry file before it returns.
func (s *FileStore) Put(ctx context.Context, e ClientEntry) error {
	_, err := s.write(ctx, e.ClientID, func() error { return nil }, &e)
	return err
}

// Create stores a copy of e if neither its ClientID nor its AssignedIP is
// taken, and writes the registry file before it returns.
func (s *FileStore) Create(ctx context.Context, e ClientEntry) (int64, error) {
	return s.write(ctx, e.ClientID, func() error { return s.t.checkCreate(e) }, &e)
}

// Update replaces the entry if it is still at version, and writes the
// registry file before it returns.
func (s *FileStore) Update(ctx context.Context, e ClientEntry, version int64) (int64, error) {
	return s.write(ctx, e.ClientID, func() error { return s.t.checkUpdate(e, version) }, &e)
}

// Delete removes the entry with that ClientID and writes the registry file
// before it returns; deleting a missing entry is not an error and writes nothing.
func (s *FileStore) Delete(ctx context.Context, clientID string) error {
	_, err := s.write(ctx, clientID, func() error { return nil }, nil)
	return err
}

// Remove deletes the entry if it is still at version, and writes the
// registry file before it returns.
func (s *FileStore) Remove(ctx context.Context, clientID string, version int64) error {
	_, err := s.write(ctx, clientID, func() error { return s.t.checkVersion(clientID, version) }, nil)
	return err
}

// Watch delivers the changes made through s after it returns.
func (s *FileStore) Watch(ctx context.Context) (<-chan StoreEvent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t.watchers.add(ctx), nil
}

// write checks, then stores e (nil: deletes id) and writes the file, under
// the lock; a failed file write undoes the change.
func (s *FileStore) write(ctx context.Context, id string, check func() error, e *ClientEntry) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := checkStoreID(id); err != nil {
		return 0, err
	}
	var enc []byte
	if e != nil {
		c := e.clone()
		e = &c
		var err error
		if enc, err = encodeEntry(c); err != nil {
			return 0, fmt.Errorf("warren: file store: encoding client %q: %w", id, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := check(); err != nil {
		return 0, err
	}
	oldEnc, hadEnc := s.encoded[id]
	var ev StoreEvent
	var undo func()
	if e == nil {
		if _, ok := s.t.entries[id]; !ok {
			return 0, nil
		}
		ev, undo = s.t.del(id)
		delete(s.encoded, id)
	} else {
		ev, undo = s.t.set(*e)
		s.encoded[id] = enc
	}
	if err := s.persist(); err != nil {
		undo()
		if hadEnc {
			s.encoded[id] = oldEnc
		} else {
			delete(s.encoded, id)
		}
		s.restore(err)
		return 0, err
	}
	s.t.publish(ev)
	return ev.Version, nil
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
