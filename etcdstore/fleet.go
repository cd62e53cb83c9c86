package etcdstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/warrenvpn/warren"
)

// Live sessions across hubs
//
// Store is a warren.FleetStore: a hub on it records its live sessions at
//
//	<prefix>sessions/<hubId>/<sessionId>  the warren.SessionRecord as JSON
//
// under a lease of its own (Config.SessionTTL), kept alive while the hub
// runs, and revoked when it closes. A hub that dies stops keeping it alive,
// so its records vanish within SessionTTL. Each hub watches the sessions
// prefix and keeps the fleet's records in memory, which is what
// Server.ListClients and MaxConnections read: no request to etcd on a
// handshake.
//
// Writes happen in one background goroutine per hub, in order: a session's
// record is written after the handshake, never blocking it. While etcd is
// down the writes wait and retry (backoff up to 5 s); when the hub's lease
// has expired meanwhile (etcd down longer than SessionTTL, or the lease
// revoked), the hub takes a new lease and writes the records of its live
// sessions again.

// Defaults of the fleet options of Config.
const (
	DefaultSessionTTL = 5 * time.Second
)

var _ warren.FleetStore = (*Store)(nil)

func (s *Store) sessionsPrefix() string { return s.prefix + "sessions/" }

// JoinFleet starts recording this hub's sessions as Config.HubID. A Store
// serves one hub at a time: a second JoinFleet before the first Fleet is
// closed fails (give each hub its own Store, with its own HubID).
func (s *Store) JoinFleet() (warren.Fleet, error) {
	s.fleetMu.Lock()
	defer s.fleetMu.Unlock()
	if s.joined {
		return nil, fmt.Errorf("etcdstore: hub %q already joined the fleet through this Store; give each hub its own Store and HubID", s.hubID)
	}
	s.joined = true
	ctx, cancel := context.WithCancel(context.Background())
	f := &fleet{
		s:       s,
		ctx:     ctx,
		cancel:  cancel,
		kick:    make(chan struct{}, 1),
		changed: make(chan struct{}, 1),
		mine:    make(map[string]*ownRecord),
		gone:    make(map[string]bool),
		view:    make(map[string]warren.SessionRecord),
	}
	f.wg.Add(2)
	go f.writeLoop()
	go f.watchLoop()
	return f, nil
}

// fleet is a hub's membership (warren.Fleet).
type fleet struct {
	s      *Store
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{} // wakes writeLoop
	// changed tells the hub the view changed.
	changed chan struct{}

	mu    sync.Mutex
	lease clientv3.LeaseID // 0: none held now
	mine  map[string]*ownRecord
	gone  map[string]bool                 // withdrawn, delete pending
	view  map[string]warren.SessionRecord // by key, as the watch saw it
	once  sync.Once
}

type ownRecord struct {
	rec     warren.SessionRecord
	written bool // under the current lease
}

// retry bounds of the background loops.
const (
	fleetRetryMin = 100 * time.Millisecond
	fleetRetryMax = 5 * time.Second
)

func (f *fleet) HubID() string { return f.s.hubID }

func (f *fleet) key(sessionID string) string {
	return f.s.sessionsPrefix() + f.s.hubID + "/" + sessionID
}

func (f *fleet) wake() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

func (f *fleet) notify() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// Publish queues r's write.
func (f *fleet) Publish(r warren.SessionRecord) {
	r.HubID = f.s.hubID
	r.Revision = 0
	f.mu.Lock()
	f.mine[r.SessionID] = &ownRecord{rec: r}
	delete(f.gone, r.SessionID)
	f.mu.Unlock()
	f.wake()
}

// Withdraw queues the deletion of a session's record.
func (f *fleet) Withdraw(sessionID string) {
	f.mu.Lock()
	delete(f.mine, sessionID)
	f.gone[sessionID] = true
	f.mu.Unlock()
	f.wake()
	f.notify()
}

// Sessions returns the records seen, without those withdrawn.
func (f *fleet) Sessions() []warren.SessionRecord {
	return f.filter(func(warren.SessionRecord) bool { return true })
}

// ClientSessions returns one client's records, as Sessions.
func (f *fleet) ClientSessions(clientID string) []warren.SessionRecord {
	return f.filter(func(r warren.SessionRecord) bool { return r.ClientID == clientID })
}

func (f *fleet) filter(keep func(warren.SessionRecord) bool) []warren.SessionRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []warren.SessionRecord
	for _, r := range f.view {
		if keep(r) && !(r.HubID == f.s.hubID && f.gone[r.SessionID]) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b warren.SessionRecord) int { return strings.Compare(a.SessionID, b.SessionID) })
	return out
}

func (f *fleet) Changed() <-chan struct{} { return f.changed }

// Close stops the loops and revokes the hub's lease, which deletes its
// records at once; if etcd does not answer within the request timeout (at
// most SessionTTL), they expire with the lease.
func (f *fleet) Close() error {
	var err error
	f.once.Do(func() {
		f.cancel()
		f.wg.Wait()
		f.mu.Lock()
		lease := f.lease
		f.lease = 0
		f.mu.Unlock()
		if lease != 0 {
			ctx, cancel := context.WithTimeout(context.Background(), min(f.s.timeout, f.s.sessionTTL))
			defer cancel()
			if _, rerr := f.s.cli.Revoke(ctx, lease); rerr != nil {
				err = f.s.fail("revoking hub "+f.s.hubID+"'s lease", rerr)
			}
		}
		f.s.fleetMu.Lock()
		f.s.joined = false
		f.s.fleetMu.Unlock()
	})
	return err
}

// sleep waits d or until the fleet closes; it reports false on close.
func (f *fleet) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-f.ctx.Done():
		return false
	}
}

// writeLoop writes the hub's records: a lease first, then the pending puts
// and deletes, retrying with backoff while etcd fails.
func (f *fleet) writeLoop() {
	defer f.wg.Done()
	wait := fleetRetryMin
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-f.kick:
		}
		for {
			err := f.flush()
			if err == nil {
				wait = fleetRetryMin
				break
			}
			if f.ctx.Err() != nil {
				return
			}
			if !f.sleep(wait) {
				return
			}
			wait = min(2*wait, fleetRetryMax)
		}
	}
}

// flush writes what is pending.
func (f *fleet) flush() error {
	f.mu.Lock()
	lease := f.lease
	f.mu.Unlock()
	if lease == 0 {
		var err error
		if lease, err = f.grant(); err != nil {
			return err
		}
	}
	f.mu.Lock()
	var puts []warren.SessionRecord
	for _, o := range f.mine {
		if !o.written {
			puts = append(puts, o.rec)
		}
	}
	dels := slices.Collect(maps.Keys(f.gone))
	f.mu.Unlock()

	const batch = 64 // below etcd's default limit of 128 operations per transaction
	for chunk := range slices.Chunk(puts, batch) {
		ops := make([]clientv3.Op, 0, len(chunk))
		for _, r := range chunk {
			val, err := json.Marshal(r)
			if err != nil {
				return fmt.Errorf("etcdstore: encoding session %s: %w", r.SessionID, err)
			}
			ops = append(ops, clientv3.OpPut(f.key(r.SessionID), string(val), clientv3.WithLease(lease)))
		}
		if err := f.txn(ops, lease); err != nil {
			return err
		}
		f.mu.Lock()
		for _, r := range chunk {
			if o, ok := f.mine[r.SessionID]; ok && o.rec == r && f.lease == lease {
				o.written = true
			}
		}
		f.mu.Unlock()
	}
	for chunk := range slices.Chunk(dels, batch) {
		ops := make([]clientv3.Op, 0, len(chunk))
		for _, id := range chunk {
			ops = append(ops, clientv3.OpDelete(f.key(id)))
		}
		if err := f.txn(ops, lease); err != nil {
			return err
		}
		f.mu.Lock()
		for _, id := range chunk {
			if _, back := f.mine[id]; !back {
				delete(f.gone, id)
			}
		}
		f.mu.Unlock()
	}
	return nil
}

// txn commits ops; a lease etcd no longer knows is dropped, so the next
// flush takes a new one.
func (f *fleet) txn(ops []clientv3.Op, lease clientv3.LeaseID) error {
	ctx, cancel := f.s.reqCtx(f.ctx)
	defer cancel()
	_, err := f.s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			f.lost(lease)
		}
		return f.s.fail("writing hub "+f.s.hubID+"'s session records", err)
	}
	return nil
}

// grant takes a new lease, keeps it alive, and marks every record to be
// written under it.
func (f *fleet) grant() (clientv3.LeaseID, error) {
	ctx, cancel := f.s.reqCtx(f.ctx)
	defer cancel()
	resp, err := f.s.cli.Grant(ctx, int64((f.s.sessionTTL+time.Second-1)/time.Second))
	if err != nil {
		return 0, f.s.fail("granting hub "+f.s.hubID+"'s lease", err)
	}
	ka, err := f.s.cli.KeepAlive(f.ctx, resp.ID)
	if err != nil {
		return 0, f.s.fail("keeping hub "+f.s.hubID+"'s lease alive", err)
	}
	f.mu.Lock()
	f.lease = resp.ID
	for _, o := range f.mine {
		o.written = false
	}
	f.mu.Unlock()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for range ka {
		}
		// The channel closes when the fleet closes, or when the lease
		// is gone: expired while etcd was unreachable, or revoked.
		if f.ctx.Err() == nil {
			f.lost(resp.ID)
		}
	}()
	return resp.ID, nil
}

// lost forgets lease, so the next flush takes a new one and writes every
// record again.
func (f *fleet) lost(lease clientv3.LeaseID) {
	f.mu.Lock()
	if f.lease == lease {
		f.lease = 0
		for _, o := range f.mine {
			o.written = false
		}
	}
	f.mu.Unlock()
	f.wake()
}

// watchLoop keeps view, the fleet's records: a load, then a watch from the
// revision loaded; again from a fresh load when the watch breaks.
func (f *fleet) watchLoop() {
	defer f.wg.Done()
	wait := fleetRetryMin
	for f.ctx.Err() == nil {
		rev, err := f.load()
		if err != nil {
			if !f.sleep(wait) {
				return
			}
			wait = min(2*wait, fleetRetryMax)
			continue
		}
		wait = fleetRetryMin
		f.follow(rev)
	}
}

// load reads every record into view and returns etcd's revision.
func (f *fleet) load() (int64, error) {
	ctx, cancel := f.s.reqCtx(f.ctx)
	defer cancel()
	resp, err := f.s.cli.Get(ctx, f.s.sessionsPrefix(), clientv3.WithPrefix())
	if err != nil {
		return 0, f.s.fail("loading the fleet's sessions", err)
	}
	view := make(map[string]warren.SessionRecord, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if r, ok := decodeRecord(kv); ok {
			view[string(kv.Key)] = r
		}
	}
	f.mu.Lock()
	f.view = view
	f.mu.Unlock()
	f.notify()
	return resp.Header.Revision, nil
}

// follow applies the watch's changes after rev until it breaks or the
// fleet closes.
func (f *fleet) follow(rev int64) {
	ctx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	for resp := range f.s.cli.Watch(ctx, f.s.sessionsPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if resp.Err() != nil {
			return
		}
		f.mu.Lock()
		for _, ev := range resp.Events {
			if ev.Type == mvccpb.DELETE {
				delete(f.view, string(ev.Kv.Key))
			} else if r, ok := decodeRecord(ev.Kv); ok {
				f.view[string(ev.Kv.Key)] = r
			}
		}
		f.mu.Unlock()
		f.notify()
	}
}

// decodeRecord reads a record; one this version cannot read is left out.
func decodeRecord(kv *mvccpb.KeyValue) (warren.SessionRecord, bool) {
	var r warren.SessionRecord
	if err := json.Unmarshal(kv.Value, &r); err != nil || r.SessionID == "" {
		return r, false
	}
	r.Revision = kv.CreateRevision
	return r, true
}

// fleetConfig checks and applies the fleet options of cfg.
func (s *Store) fleetConfig(cfg Config) error {
	s.hubID, s.sessionTTL = cfg.HubID, cfg.SessionTTL
	if s.sessionTTL < 0 {
		return &warren.ConfigError{Field: "sessionTtl", Value: s.sessionTTL.String(), Reason: "must not be negative"}
	}
	if s.sessionTTL == 0 {
		s.sessionTTL = DefaultSessionTTL
	}
	if s.hubID == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return &warren.ConfigError{Field: "hubId", Reason: "required: the host name is unknown"}
		}
		var b [3]byte
		_, _ = rand.Read(b[:])
		// Unique even for two hubs on one host; records live only as
		// long as the hub, so a new name at each start loses nothing.
		s.hubID = h + "-" + hex.EncodeToString(b[:])
	}
	if strings.ContainsAny(s.hubID, "/\x00") {
		return &warren.ConfigError{Field: "hubId", Value: s.hubID, Reason: "must not contain '/'"}
	}
	return nil
}
