package warren

import (
	"context"
	"slices"
	"strings"
	"sync"
)

// Store persists the registry's ClientEntry records. Every registry mutation is
// written through the Store before the API call that made it returns.
//
// Implementations must be safe for concurrent use.
type Store interface {
	// Load returns every stored entry.
	Load(ctx context.Context) ([]ClientEntry, error)
	// Put stores e, replacing any entry with the same ClientID.
	Put(ctx context.Context, e ClientEntry) error
	// Delete removes the entry with that ClientID; deleting a missing entry is not an error.
	Delete(ctx context.Context, clientID string) error
}

// MemoryStore is a Store that keeps the registry in memory only; it is what a
// Server uses when ServerConfig.Store is nil. The zero value is not ready: use
// NewMemoryStore. It is safe for concurrent use.
type MemoryStore struct {
	mu      sync.RWMutex
	entries map[string]ClientEntry
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{entries: make(map[string]ClientEntry)}
}

// Load returns a copy of every entry, sorted by ClientID.
func (m *MemoryStore) Load(ctx context.Context) ([]ClientEntry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return sortedEntries(m.entries), nil
}

// Put stores a copy of e, replacing any entry with the same ClientID.
func (m *MemoryStore) Put(ctx context.Context, e ClientEntry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkStoreID(e.ClientID); err != nil {
		return err
	}
	e = e.clone()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.entries[e.ClientID] = e
	return nil
}

// Delete removes the entry with that ClientID; deleting a missing entry is not an error.
func (m *MemoryStore) Delete(ctx context.Context, clientID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.entries, clientID)
	return nil
}

// sortedEntries returns deep copies of the entries in m, sorted by ClientID.
func sortedEntries(m map[string]ClientEntry) []ClientEntry {
	out := make([]ClientEntry, 0, len(m))
	for _, e := range m {
		out = append(out, e.clone())
	}
	slices.SortFunc(out, func(a, b ClientEntry) int { return strings.Compare(a.ClientID, b.ClientID) })
	return out
}

// checkStoreID rejects an entry that no Store could key.
func checkStoreID(id string) error {
	if id == "" {
		return configErr("clientId", "", "must not be empty")
	}
	return nil
}
