package warren

import (
	"context"
	"fmt"
	"time"
)

// Several hubs on one registry
//
// With a WatchableStore (MemoryStore, FileStore, etcdstore) a running hub
// follows the store's changes, whoever made them: watchRegistry applies each
// change to the registry snapshot, under the writer lock like a local
// mutation, and then to live sessions through the same calls the local API
// makes (applyChange). A change is applied only if its Version is greater
// than the entry's in the snapshot, so the hub's own writes, which the watch
// reports too, and changes already seen by a resync are skipped.
//
// When the watch cannot start or breaks (etcd down, a reader too slow), the
// hub keeps serving its live sessions from the snapshot it has, and retries;
// once a watch runs again it loads the whole store (resync), so nothing
// changed meanwhile is missed.

// watchRetry bounds the wait between attempts to watch the store again.
const (
	watchRetryMin = 100 * time.Millisecond
	watchRetryMax = 5 * time.Second
)

// watchRegistry follows the store until ctx ends. It is started by Start
// and owned by s.wg.
func (s *Server) watchRegistry(ctx context.Context) {
	defer s.wg.Done()
	wait := watchRetryMin
	for ctx.Err() == nil {
		ch, err := s.wstore.Watch(ctx)
		if err == nil {
			err = s.resync(ctx)
			if err == nil {
				wait = watchRetryMin
				for ev := range ch {
					s.applyEvent(ev)
				}
				if ctx.Err() != nil {
					return
				}
				s.log.Debug("registry watch ended; watching again")
				continue
			}
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("watching the registry store; retrying", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, watchRetryMax)
	}
}

// resync makes the snapshot match the whole store: what the watch may have
// missed before it started.
func (s *Server) resync(ctx context.Context) error {
	type change struct{ old, now *regEntry }
	var changes []change
	err := s.reg.update(func(cur *regSnapshot) (*regSnapshot, error) {
		stored, err := s.loadStored(ctx)
		if err != nil {
			return nil, fmt.Errorf("warren: loading registry: %w", err)
		}
		next := cur.withClients()
		seen := make(map[string]bool, len(stored))
		for _, se := range stored {
			id := se.Entry.ClientID
			seen[id] = true
			old := cur.byID[id]
			if old != nil && old.version >= se.Version && s.vstore != nil {
				continue
			}
			now, ok := s.remoteEntry(se.Entry, se.Version)
			if !ok {
				continue
			}
			if old != nil {
				next.remove(old)
			}
			next.insert(now)
			changes = append(changes, change{old, now})
		}
		for id, old := range cur.byID {
			if !seen[id] {
				next.remove(old)
				changes = append(changes, change{old, nil})
			}
		}
		if len(changes) == 0 {
			return nil, nil
		}
		return next, nil
	})
	if err != nil {
		return err
	}
	for _, c := range changes {
		s.applyChange(c.old, c.now)
	}
	return nil
}

// applyEvent applies one change of the store, unless the snapshot already
// has it or a newer one.
func (s *Server) applyEvent(ev StoreEvent) {
	var old, now *regEntry
	changed := false
	_ = s.reg.update(func(cur *regSnapshot) (*regSnapshot, error) {
		old = cur.byID[ev.ClientID]
		if old != nil && old.version >= ev.Version {
			return nil, nil
		}
		if !ev.Deleted {
			var ok bool
			if now, ok = s.remoteEntry(ev.Entry, ev.Version); !ok {
				return nil, nil
			}
		} else if old == nil {
			return nil, nil
		}
		next := cur.withClients()
		if old != nil {
			next.remove(old)
		}
		if now != nil {
			next.insert(now)
		}
		changed = true
		return next, nil
	})
	if changed {
		s.applyChange(old, now)
	}
}

// remoteEntry checks an entry another hub stored; one this hub cannot
// serve (another subnet, say) is logged and left out.
func (s *Server) remoteEntry(e ClientEntry, version int64) (*regEntry, bool) {
	sec, err := s.checkEntry("store", &e)
	if err != nil {
		s.log.Warn("registry store holds a client this hub cannot serve", "client", e.ClientID, "err", err)
		return nil, false
	}
	return &regEntry{entry: e.clone(), sec: sec, version: version}, true
}

// applyChange makes live sessions follow a registry entry that changed
// from old to now (nil: absent), as the local API does after its own
// changes: a removed, disabled, expired or re-keyed client loses its
// sessions and WireGuard peer; new security lists, limits and priority
// apply at once.
func (s *Server) applyChange(old, now *regEntry) {
	switch {
	case now == nil:
		id := old.entry.ClientID
		s.replay.Forget(old.entry.PublicKey)
		s.wgSync(id)
		s.dropSessions(id, reasonRemoved)
		s.forgetClient(id)
		return
	case old == nil:
		s.wgSync(now.entry.ClientID)
		s.expiryChanged()
		return
	}
	id := now.entry.ClientID
	if old.entry.PublicKey != now.entry.PublicKey {
		s.replay.Forget(old.entry.PublicKey)
		s.dropSessions(id, reasonKeyRotated)
	}
	if !now.entry.Enabled {
		s.dropSessions(id, reasonDisabled)
	}
	s.applySecurity(id)
	s.applyLimits(id)
	s.wgSync(id)
	if expired(now.entry.ExpiresAt, time.Now()) {
		s.dropSessions(id, reasonExpired)
	}
	s.expiryChanged()
	s.limitSessions(id, now.maxConns(), reasonLimitLowered)
}
