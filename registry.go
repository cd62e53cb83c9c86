package warren

import (
	"maps"
	"net/netip"
	"sync"
	"sync/atomic"
)

// registry is the hub's in-memory view of the Store, and the one place that
// hands out tunnel addresses and WireGuard keys: static WireGuard peers hold
// theirs here too, so no client is given a static peer's address or key.
//
// Readers — handshakes, the WireGuard session path, Status, the janitor —
// load the current regSnapshot with one atomic load and take no lock: a
// published snapshot is never changed.
//
// Writers serialise on mu and hold it across the whole change: validate
// against the current snapshot, write the Store, publish the next snapshot
// (update). A writer waiting on the disk therefore stalls only other
// writers, which must wait anyway, since they may want the same address or
// ID; no reader ever waits for the Store. Releasing mu during the Store
// write would let writers fsync in parallel, but a writer would then need a
// version check at commit and, when another writer took its address or ID
// meanwhile, an undo of its store write; FileStore serialises its writes
// anyway, so that buys nothing here. A Store write that fails publishes
// nothing, so the Store and the registry always agree.
//
// Each write copies the maps it changes: O(clients), as is FileStore's
// rewrite of its file and freeAddr's scan.
//
// Lock order: Server.wgMu, then mu, then Server.mu (applySecurity).
type registry struct {
	mu  sync.Mutex // held by writers only
	cur atomic.Pointer[regSnapshot]
}

// regSnapshot is one immutable version of the registry. Its maps and
// entries must not be changed once it is published; a writer changes a copy
// made by withClients or withStatic.
type regSnapshot struct {
	byID  map[string]*regEntry
	byKey map[Key]*regEntry // by Noise public key: what a handshake looks up
	byWG  map[Key]*regEntry // by WireGuard public key, for clients that have one
	byIP  map[netip.Addr]*regEntry
	// static holds the static WireGuard peers (ServerConfig.WGPeers,
	// AddWGPeer) by tunnel address.
	static map[netip.Addr]WGPeer
}

// regEntry is a registered client and its compiled security lists. It is
// never changed once in a snapshot: a change replaces it.
type regEntry struct {
	entry ClientEntry
	sec   *compiledSecurity
	// version is the entry's StoredEntry.Version in a VersionedStore (0
	// with another Store): which of two versions of a client is newer, and
	// what a conditional write names.
	version int64
}

// newRegistry returns a registry that publishes sn, or an empty one if sn is nil.
func newRegistry(sn *regSnapshot) *registry {
	if sn == nil {
		sn = emptySnapshot()
	}
	r := &registry{}
	r.cur.Store(sn)
	return r
}

func emptySnapshot() *regSnapshot {
	return &regSnapshot{
		byID:   make(map[string]*regEntry),
		byKey:  make(map[Key]*regEntry),
		byWG:   make(map[Key]*regEntry),
		byIP:   make(map[netip.Addr]*regEntry),
		static: make(map[netip.Addr]WGPeer),
	}
}

// load returns the current snapshot, for reading only.
func (r *registry) load() *regSnapshot { return r.cur.Load() }

// lookupKey returns the entry registered for a Noise public key.
func (r *registry) lookupKey(k Key) (*regEntry, bool) {
	re, ok := r.cur.Load().byKey[k]
	return re, ok
}

// lookupID returns the entry registered under a client ID.
func (r *registry) lookupID(id string) (*regEntry, bool) {
	re, ok := r.cur.Load().byID[id]
	return re, ok
}

// update runs change with the writer lock held, on the current snapshot.
// change validates, does any Store I/O and returns the snapshot to publish
// (made with withClients or withStatic), nil to publish nothing, or an error,
// which publishes nothing.
func (r *registry) update(change func(cur *regSnapshot) (*regSnapshot, error)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	next, err := change(r.cur.Load())
	if err != nil {
		return err
	}
	if next != nil {
		r.cur.Store(next)
	}
	return nil
}

// withClients returns a copy of sn whose client maps a writer may change;
// the static peers are shared.
func (sn *regSnapshot) withClients() *regSnapshot {
	return &regSnapshot{
		byID:   maps.Clone(sn.byID),
		byKey:  maps.Clone(sn.byKey),
		byWG:   maps.Clone(sn.byWG),
		byIP:   maps.Clone(sn.byIP),
		static: sn.static,
	}
}

// withStatic returns a copy of sn whose static peers a writer may change;
// the client maps are shared.
func (sn *regSnapshot) withStatic() *regSnapshot {
	next := *sn
	next.static = maps.Clone(sn.static)
	return &next
}

// insert adds re to a snapshot made by withClients.
func (sn *regSnapshot) insert(re *regEntry) {
	sn.byID[re.entry.ClientID] = re
	sn.byKey[re.entry.PublicKey] = re
	if !re.entry.WGPublicKey.IsZero() {
		sn.byWG[re.entry.WGPublicKey] = re
	}
	sn.byIP[re.entry.AssignedIP] = re
}

// remove takes re out of a snapshot made by withClients. An index slot that
// another entry has taken since (a change from another hub applied before
// the one that freed the slot) stays that entry's.
func (sn *regSnapshot) remove(re *regEntry) {
	if sn.byID[re.entry.ClientID] == re {
		delete(sn.byID, re.entry.ClientID)
	}
	if sn.byKey[re.entry.PublicKey] == re {
		delete(sn.byKey, re.entry.PublicKey)
	}
	if sn.byWG[re.entry.WGPublicKey] == re {
		delete(sn.byWG, re.entry.WGPublicKey)
	}
	if sn.byIP[re.entry.AssignedIP] == re {
		delete(sn.byIP, re.entry.AssignedIP)
	}
}

// staticByKey returns the tunnel address of the static peer with WireGuard
// key k.
func (sn *regSnapshot) staticByKey(k Key) (netip.Addr, bool) {
	for a, p := range sn.static {
		if p.PublicKey == k {
			return a, true
		}
	}
	return netip.Addr{}, false
}
