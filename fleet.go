package warren

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"slices"
	"time"
)

// Live sessions across hubs
//
// With a FleetStore (etcdstore), every hub records its live sessions in the
// store under a lease of its own, so each hub sees the whole fleet's:
// ListClients lists them with the hub that serves each (ClientInfo.HubID),
// and MaxConnections counts a client's sessions on every hub.
//
// Records are written off the data path: a session is published when it is
// registered and withdrawn when it ends, and the Fleet writes both in the
// background. While the store is unreachable sessions connect and run as
// before; their records catch up when it is back (and are written again
// under a new lease if the old one expired meanwhile).
//
// MaxConnections keeps its policy across hubs: replace the oldest. A hub
// never refuses a handshake for the limit; after registering a session it
// reads the fleet's records (from the Fleet's in-memory view, no I/O) and
// ends its own sessions of that client that are the oldest beyond the limit.
// Sessions are ordered fleet-wide by their record's Revision (the store's,
// so hubs' clocks do not matter); a session whose record is not written yet
// is newer than every recorded one. A hub whose session is the oldest
// learns of the newer session from the store and ends its own (reason:
// replaced by a newer session): no hub ends another hub's session, each ends
// its own when it sees the records. Race window: from a handshake until the
// other hubs have seen its record (the store write plus the watch, a few
// milliseconds with etcd up; while the store is down, until it is back), a
// client can hold more than MaxConnections sessions across hubs. Two
// sessions that start at once on two hubs both start; the one recorded
// first is ended once both records are seen, by every hub's same reading.
//
// A session another hub serves is listed from its record: no byte or packet
// counters, no tags. DisconnectClient, Status and Statistics concern this
// hub's own sessions only.

// SessionRecord is one live session as a hub records it in a FleetStore.
type SessionRecord struct {
	// HubID is the hub that serves the session (Fleet.HubID).
	HubID string `json:"hubId"`
	// SessionID names the session, unique in the fleet (random).
	SessionID      string         `json:"sessionId"`
	ClientID       string         `json:"clientId"`
	AssignedIP     netip.Addr     `json:"assignedIp"`
	Transport      string         `json:"transport"`
	RemoteAddr     netip.AddrPort `json:"remoteAddr"`
	ConnectedSince time.Time      `json:"connectedSince"`
	PublicKey      Key            `json:"publicKey"`
	// Revision orders records fleet-wide: a record first written later has
	// a greater one. The store sets it (etcd: the key's create revision);
	// zero in what a hub publishes.
	Revision int64 `json:"-"`
}

// FleetStore is a Store that also keeps the live sessions of the hubs that
// share it. etcdstore.Store is one; MemoryStore and FileStore are not (a hub
// on them lists and counts only its own sessions).
type FleetStore interface {
	Store
	// JoinFleet makes the caller a member of the fleet, as the store's hub
	// ID. A Server calls it in Start and closes the Fleet in Close. It
	// does no I/O that waits for the store.
	JoinFleet() (Fleet, error)
}

// Fleet is one hub's membership of a FleetStore. Its methods, except
// Close, never wait for the store.
type Fleet interface {
	// HubID names this hub in the fleet's records.
	HubID() string
	// Publish records a live session of this hub, in the background.
	Publish(SessionRecord)
	// Withdraw removes the record of a session of this hub, in the background.
	Withdraw(sessionID string)
	// Sessions returns the fleet's records as last seen: every hub's,
	// this one's once written, without those this hub has withdrawn.
	Sessions() []SessionRecord
	// ClientSessions returns the records of one client, as Sessions.
	ClientSessions(clientID string) []SessionRecord
	// Changed receives a value (coalesced) after the records change.
	Changed() <-chan struct{}
	// Close withdraws every record of this hub at once and stops.
	Close() error
}

// joinFleet joins the store's fleet, when it has one.
func (s *Server) joinFleet() error {
	fs, ok := s.store.(FleetStore)
	if !ok {
		return nil
	}
	f, err := fs.JoinFleet()
	if err != nil {
		return err
	}
	s.fleet = f
	return nil
}

// leaveFleet withdraws the hub's records. A failure is logged: the records
// vanish with the hub's lease anyway.
func (s *Server) leaveFleet() {
	if s.fleet == nil {
		return
	}
	if err := s.fleet.Close(); err != nil {
		s.log.Warn("withdrawing the hub's session records", "err", err)
	}
}

// followFleet applies MaxConnections across hubs each time the fleet's
// records change. Started by Start, owned by s.wg.
func (s *Server) followFleet(ctx context.Context) {
	defer s.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.fleet.Changed():
		}
		s.mu.Lock()
		ids := make([]string, 0, len(s.sessions))
		for id, list := range s.sessions {
			if len(list) > 0 && !list[0].static {
				ids = append(ids, id)
			}
		}
		s.mu.Unlock()
		reg := s.reg.load()
		for _, id := range ids {
			if re, ok := reg.byID[id]; ok {
				s.limitSessions(id, re.maxConns(), reasonReplaced)
			}
		}
	}
}

// newSessionID returns a random session ID.
func newSessionID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// publishSession records a registered client's new session in the fleet.
func (s *Server) publishSession(ss *session) {
	if s.fleet == nil || ss.static {
		return
	}
	s.fleet.Publish(SessionRecord{
		HubID:          s.fleet.HubID(),
		SessionID:      ss.fleetID,
		ClientID:       ss.id,
		AssignedIP:     ss.ip,
		Transport:      ss.transport,
		RemoteAddr:     ss.remoteAddr(),
		ConnectedSince: ss.since,
		PublicKey:      ss.key,
	})
}

// withdrawSession removes an ended session's record.
func (s *Server) withdrawSession(ss *session) {
	if s.fleet == nil || ss.static || ss.fleetID == "" {
		return
	}
	s.fleet.Withdraw(ss.fleetID)
}

// excessSessions returns the sessions of list (a client's sessions on this
// hub, oldest first) to end so the client holds at most limit sessions: on
// this hub alone, or, in a fleet, on all hubs, the oldest by record
// Revision ending first. Call with s.mu held.
func (s *Server) excessSessions(id string, list []*session, limit int) []*session {
	limit = max(limit, 1)
	if s.fleet == nil || len(list) == 0 || list[0].static {
		if n := len(list) - limit; n > 0 {
			return slices.Clone(list[:n])
		}
		return nil
	}
	type ranked struct {
		rev   int64 // 0: not recorded yet, newer than every recorded one
		local int   // index in list, or -1 for another hub's
	}
	mine := make(map[string]int, len(list))
	for i, ss := range list {
		mine[ss.fleetID] = i
	}
	all := make([]ranked, 0, len(list))
	revs := make([]int64, len(list))
	for _, r := range s.fleet.ClientSessions(id) {
		if i, ok := mine[r.SessionID]; ok {
			revs[i] = r.Revision
			continue
		}
		if r.HubID == s.fleet.HubID() {
			continue // a record of this hub whose withdrawal is in flight
		}
		all = append(all, ranked{r.Revision, -1})
	}
	for i := range list {
		all = append(all, ranked{revs[i], i})
	}
	slices.SortStableFunc(all, func(a, b ranked) int {
		ra, rb := a.rev, b.rev
		if ra == 0 {
			ra = 1<<63 - 1
		}
		if rb == 0 {
			rb = 1<<63 - 1
		}
		return cmp.Or(cmp.Compare(ra, rb), cmp.Compare(a.local, b.local))
	})
	var out []*session
	if n := len(all) - limit; n > 0 {
		for _, r := range all[:n] {
			if r.local >= 0 {
				out = append(out, list[r.local])
			}
		}
	}
	return out
}

// fleetClients adds the hub ID to local sessions and appends the sessions
// other hubs serve (from their records: their counters are not shared, and
// read zero).
func (s *Server) fleetClients(local []ClientInfo) []ClientInfo {
	if s.fleet == nil {
		return local
	}
	hub := s.fleet.HubID()
	for i := range local {
		local[i].HubID = hub
	}
	for _, r := range s.fleet.Sessions() {
		if r.HubID == hub {
			continue // this hub's sessions are listed live
		}
		local = append(local, ClientInfo{
			ClientID:       r.ClientID,
			AssignedIP:     r.AssignedIP,
			Transport:      r.Transport,
			RemoteAddr:     r.RemoteAddr,
			ConnectedSince: r.ConnectedSince,
			PublicKey:      r.PublicKey,
			HubID:          r.HubID,
		})
	}
	return local
}
