package warren

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// Store persists the registry's ClientEntry records. Every registry mutation is
// written through the Store before the API call that made it returns.
//
// Implementations must be safe for concurrent use.
//
// A Store may offer more through optional interfaces, which a Server finds
// with a type assertion: VersionedStore (conditional writes and an atomic
// address assignment, so several hubs can share one registry without losing
// a write) and WatchableStore (a feed of changes, so a hub sees what other
// hubs change). MemoryStore and FileStore implement both. A type that embeds
// one of them inherits these methods too: a wrapper that changes Put and
// Delete must change Create, Update and Remove the same way.
type Store interface {
	// Load returns every stored entry.
	Load(ctx context.Context) ([]ClientEntry, error)
	// Put stores e, replacing any entry with the same ClientID.
	Put(ctx context.Context, e ClientEntry) error
	// Delete removes the entry with that ClientID; deleting a missing entry is not an error.
	Delete(ctx context.Context, clientID string) error
}

// Errors of a VersionedStore's conditional writes, to test with errors.Is.
var (
	// ErrConflict: the entry changed (or went) since the version a
	// conditional write named; read it again and retry.
	ErrConflict = errors.New("warren: registry entry changed concurrently")
	// ErrAddressTaken: another entry holds the address.
	ErrAddressTaken = errors.New("warren: address already assigned")
)

// StoredEntry is an entry of a VersionedStore and its version.
type StoredEntry struct {
	Entry ClientEntry
	// Version is the store's revision at the entry's last change. Every
	// change of a store gets a greater revision than the one before, so of
	// two versions of one client the greater is the newer, and a change
	// seen in a StoreEvent is newer than an entry it carries a greater
	// Version than.
	Version int64
}

// VersionedStore is a Store whose writes can be conditional: a change commits
// only if the entry is still the version it was computed from, and an
// address is assigned only if no entry holds it. That is what lets several
// hubs share one registry: two hubs never hand out one address, and a change
// on one hub never silently undoes a change made on another.
type VersionedStore interface {
	Store
	// LoadVersions returns every stored entry with its version, sorted by ClientID.
	LoadVersions(ctx context.Context) ([]StoredEntry, error)
	// Get returns one entry and its version, or an error wrapping ErrUnknownClient.
	Get(ctx context.Context, clientID string) (StoredEntry, error)
	// Create stores e only if no entry has its ClientID (else ErrClientExists)
	// and none holds its AssignedIP (else ErrAddressTaken), in one atomic
	// step, and returns the new entry's version.
	Create(ctx context.Context, e ClientEntry) (int64, error)
	// Update replaces the entry with e's ClientID only if its version is
	// still version (else ErrConflict; ErrUnknownClient if it is gone) and,
	// when e moves to another address, no other entry holds that address
	// (ErrAddressTaken). It returns the new version.
	Update(ctx context.Context, e ClientEntry, version int64) (int64, error)
	// Remove deletes the entry only if its version is still version (else
	// ErrConflict; ErrUnknownClient if it is gone), freeing its address.
	Remove(ctx context.Context, clientID string, version int64) error
}

// StoreEvent is one change of a WatchableStore.
type StoreEvent struct {
	// ClientID is the entry that changed.
	ClientID string
	// Deleted is true when the entry was removed; Entry is then zero.
	Deleted bool
	// Entry is the entry as stored by the change.
	Entry ClientEntry
	// Version is the store's revision of the change (see
	// StoredEntry.Version); positive, and growing with every change. A
	// Server applies a change only if it is newer than what it holds.
	Version int64
}

// WatchableStore is a Store that reports its changes.
type WatchableStore interface {
	Store
	// Watch returns a channel that delivers, in order, every change made to
	// the store after Watch returns, whoever made it (this process or, for a
	// shared engine such as etcd, another hub). The channel is closed when
	// ctx ends, or when the watch breaks (a reader that falls too far
	// behind, a lost history): the reader then calls Watch again and loads
	// the store to catch up. Changes may be delivered more than once; the
	// Version tells a reader which it has already seen.
	Watch(ctx context.Context) (<-chan StoreEvent, error)
}

// MemoryStore is a Store that keeps the registry in memory only; it is what a
// Server uses when ServerConfig.Store is nil. It is a VersionedStore and a
// WatchableStore: several Servers in one process may share one. The zero
// value is not ready: use NewMemoryStore. It is safe for concurrent use.
type MemoryStore struct {
	mu sync.Mutex
	t  table
}

var (
	_ VersionedStore = (*MemoryStore)(nil)
	_ WatchableStore = (*MemoryStore)(nil)
)

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	m := &MemoryStore{}
	m.t.init()
	return m
}

// Load returns a copy of every entry, sorted by ClientID.
func (m *MemoryStore) Load(ctx context.Context) ([]ClientEntry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.t.sorted(), nil
}

// LoadVersions returns a copy of every entry with its version, sorted by ClientID.
func (m *MemoryStore) LoadVersions(ctx context.Context) ([]StoredEntry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.t.sortedVersions(), nil
}

// Get returns a copy of one entry and its version.
func (m *MemoryStore) Get(ctx context.Context, clientID string) (StoredEntry, error) {
	if err := ctx.Err(); err != nil {
		return StoredEntry{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.t.get(clientID)
}

// Put stores a copy of e, replacing any entry with the same ClientID.
func (m *MemoryStore) Put(ctx context.Context, e ClientEntry) error {
	_, err := m.write(ctx, e.ClientID, func() error { return nil }, &e)
	return err
}

// Create stores a copy of e if neither its ClientID nor its AssignedIP is taken.
func (m *MemoryStore) Create(ctx context.Context, e ClientEntry) (int64, error) {
	return m.write(ctx, e.ClientID, func() error { return m.t.checkCreate(e) }, &e)
}

// Update replaces the entry if it is still at version.
func (m *MemoryStore) Update(ctx context.Context, e ClientEntry, version int64) (int64, error) {
	return m.write(ctx, e.ClientID, func() error { return m.t.checkUpdate(e, version) }, &e)
}

// Delete removes the entry with that ClientID; deleting a missing entry is not an error.
func (m *MemoryStore) Delete(ctx context.Context, clientID string) error {
	_, err := m.write(ctx, clientID, func() error { return nil }, nil)
	return err
}

// Remove deletes the entry if it is still at version.
func (m *MemoryStore) Remove(ctx context.Context, clientID string, version int64) error {
	_, err := m.write(ctx, clientID, func() error { return m.t.checkVersion(clientID, version) }, nil)
	return err
}

// write checks, then stores e (nil: deletes id), under the lock.
func (m *MemoryStore) write(ctx context.Context, id string, check func() error, e *ClientEntry) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := checkStoreID(id); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := check(); err != nil {
		return 0, err
	}
	var ev StoreEvent
	if e == nil {
		if _, ok := m.t.entries[id]; !ok {
			return 0, nil
		}
		ev, _ = m.t.del(id)
	} else {
		ev, _ = m.t.set(e.clone())
	}
	m.t.publish(ev)
	return ev.Version, nil
}

// Watch delivers the changes made through m after it returns.
func (m *MemoryStore) Watch(ctx context.Context) (<-chan StoreEvent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.t.watchers.add(ctx), nil
}

// table is the state MemoryStore and FileStore share: the entries with their
// versions, an index of addresses, and the watchers. Its owner's lock is held
// for every call.
type table struct {
	entries  map[string]StoredEntry
	addrs    map[netip.Addr]string
	rev      int64
	watchers watchers
}

func (t *table) init() {
	t.entries = make(map[string]StoredEntry)
	t.addrs = make(map[netip.Addr]string)
}

func (t *table) sorted() []ClientEntry {
	out := make([]ClientEntry, 0, len(t.entries))
	for _, se := range t.entries {
		out = append(out, se.Entry.clone())
	}
	slices.SortFunc(out, func(a, b ClientEntry) int { return strings.Compare(a.ClientID, b.ClientID) })
	return out
}

func (t *table) sortedVersions() []StoredEntry {
	out := make([]StoredEntry, 0, len(t.entries))
	for _, se := range t.entries {
		out = append(out, StoredEntry{se.Entry.clone(), se.Version})
	}
	slices.SortFunc(out, func(a, b StoredEntry) int { return strings.Compare(a.Entry.ClientID, b.Entry.ClientID) })
	return out
}

func (t *table) get(id string) (StoredEntry, error) {
	se, ok := t.entries[id]
	if !ok {
		return StoredEntry{}, errorf(ErrUnknownClient, "%q", id)
	}
	return StoredEntry{se.Entry.clone(), se.Version}, nil
}

func (t *table) checkCreate(e ClientEntry) error {
	if _, ok := t.entries[e.ClientID]; ok {
		return errorf(ErrClientExists, "%s", e.ClientID)
	}
	return t.checkAddr(e)
}

func (t *table) checkAddr(e ClientEntry) error {
	if other, ok := t.addrs[e.AssignedIP]; ok && other != e.ClientID && e.AssignedIP.IsValid() {
		return errorf(ErrAddressTaken, "%s is client %s's", e.AssignedIP, other)
	}
	return nil
}

func (t *table) checkVersion(id string, version int64) error {
	se, ok := t.entries[id]
	switch {
	case !ok:
		return errorf(ErrUnknownClient, "%q", id)
	case se.Version != version:
		return errorf(ErrConflict, "client %s is at version %d, not %d", id, se.Version, version)
	}
	return nil
}

func (t *table) checkUpdate(e ClientEntry, version int64) error {
	if err := t.checkVersion(e.ClientID, version); err != nil {
		return err
	}
	return t.checkAddr(e)
}

// set stores e at the next revision. It returns the change and a func that
// undoes it.
func (t *table) set(e ClientEntry) (StoreEvent, func()) {
	old, existed := t.entries[e.ClientID]
	undo := t.snapshot(e.ClientID, old.Entry.AssignedIP, e.AssignedIP)
	if existed && t.addrs[old.Entry.AssignedIP] == e.ClientID {
		delete(t.addrs, old.Entry.AssignedIP)
	}
	if e.AssignedIP.IsValid() {
		t.addrs[e.AssignedIP] = e.ClientID
	}
	t.rev++
	t.entries[e.ClientID] = StoredEntry{e, t.rev}
	return StoreEvent{ClientID: e.ClientID, Entry: e.clone(), Version: t.rev}, undo
}

// del removes id, which must exist, at the next revision.
func (t *table) del(id string) (StoreEvent, func()) {
	old := t.entries[id]
	undo := t.snapshot(id, old.Entry.AssignedIP, old.Entry.AssignedIP)
	if t.addrs[old.Entry.AssignedIP] == id {
		delete(t.addrs, old.Entry.AssignedIP)
	}
	delete(t.entries, id)
	t.rev++
	return StoreEvent{ClientID: id, Deleted: true, Version: t.rev}, undo
}

// snapshot returns a func that puts back id's entry, the index slots of a
// and b, and the revision, as they are now.
func (t *table) snapshot(id string, a, b netip.Addr) func() {
	old, existed := t.entries[id]
	oa, okA := t.addrs[a]
	ob, okB := t.addrs[b]
	rev := t.rev
	return func() {
		if existed {
			t.entries[id] = old
		} else {
			delete(t.entries, id)
		}
		delete(t.addrs, a)
		delete(t.addrs, b)
		if okA {
			t.addrs[a] = oa
		}
		if okB {
			t.addrs[b] = ob
		}
		t.rev = rev
	}
}

func (t *table) publish(ev StoreEvent) { t.watchers.publish(ev) }

// watchBuffer is how many changes a watcher may fall behind before its
// channel is closed, which tells it to load the store again.
const watchBuffer = 1024

// watchers are the open Watch channels of a store.
type watchers struct {
	mu  sync.Mutex // taken inside the store's lock, or alone by a watch's end
	set map[*watcher]struct{}
}

type watcher struct {
	ch   chan StoreEvent
	stop func() bool
}

// add opens a channel that lives until ctx ends or the reader falls behind.
func (w *watchers) add(ctx context.Context) <-chan StoreEvent {
	wt := &watcher{ch: make(chan StoreEvent, watchBuffer)}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.set == nil {
		w.set = make(map[*watcher]struct{})
	}
	w.set[wt] = struct{}{}
	wt.stop = context.AfterFunc(ctx, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.drop(wt)
	})
	return wt.ch
}

// drop closes wt's channel once. w.mu is held.
func (w *watchers) drop(wt *watcher) {
	if _, ok := w.set[wt]; ok {
		delete(w.set, wt)
		close(wt.ch)
	}
}

// publish hands ev to every watcher without blocking; a watcher whose buffer
// is full is dropped, and learns it from its closed channel.
func (w *watchers) publish(ev StoreEvent) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for wt := range w.set {
		e := ev
		e.Entry = ev.Entry.clone()
		select {
		case wt.ch <- e:
		default:
			wt.stop()
			w.drop(wt)
		}
	}
}

// checkStoreID rejects an entry that no Store could key.
func checkStoreID(id string) error {
	if id == "" {
		return configErr("clientId", "", "must not be empty")
	}
	return nil
}

// errorf wraps sentinel with a message.
func errorf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)
}
