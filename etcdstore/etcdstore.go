// Package etcdstore keeps a Warren hub's registry in etcd, so several hubs
// serve one registry: a warren.Store that is also a warren.VersionedStore
// and a warren.WatchableStore, on go.etcd.io/etcd/client/v3.
//
// It is a package of its own so that programs that never use etcd do not
// link etcd's client (and gRPC). It builds on the root package, as cmd/ and
// admin/ do; the root never imports it.
//
// # Layout
//
// Under a key prefix (Config.Prefix, default "/warren/"):
//
//	<prefix>clients/<clientId>  the ClientEntry as JSON
//	<prefix>addrs/<ip>          the clientId holding that tunnel address
//	<prefix>sessions/<hubId>/<sessionId>  a hub's live session, on its lease (fleet.go)
//
// An entry's version is its key's ModRevision. Every write is one etcd
// transaction that compares the client key's revision and, when it assigns
// an address, that the address key does not exist: two hubs creating clients
// at the same moment never hand out one address (the loser gets
// warren.ErrAddressTaken and its hub tries the next), and a change made on
// one hub is never silently overwritten by another.
//
// # When etcd is down
//
// Every mutation returns only after etcd has committed it. A request whose
// context has no earlier deadline gives up after Config.RequestTimeout
// (default 5 s) with an error that names the endpoints and wraps the cause
// (context.DeadlineExceeded, or etcd's own error): nothing is half written,
// since each write is one transaction. Watches resume by themselves when etcd
// is back, from the revision they had reached, so no change is missed; a hub
// serves its connected clients from its in-memory registry meanwhile.
//
// # Tests
//
// The tests run a real etcd in the test process with
// go.etcd.io/etcd/server/v3/embed on loopback ports and a temporary data
// directory, rather than Debian's etcd-server: nothing to install, the
// server is the same version as the client, and a test can stop and restart
// it (same directory, same ports) in-process.
package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/warrenvpn/warren"
)

// Defaults of Config.
const (
	DefaultPrefix         = "/warren/"
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 5 * time.Second
)

// Config says which etcd to use and where in it the registry lives.
type Config struct {
	// Endpoints are the etcd cluster's client URLs, e.g.
	// "http://10.0.0.5:2379". Required unless Client is set.
	Endpoints []string
	// Client is an etcd client to use instead of dialing Endpoints; Close
	// leaves it open.
	Client *clientv3.Client
	// Prefix is the key prefix of the registry; hubs that share a registry
	// use the same one. If empty, DefaultPrefix.
	Prefix string
	// DialTimeout bounds the first connection to Endpoints. If zero,
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// RequestTimeout bounds each request whose context has no earlier
	// deadline. If zero, DefaultRequestTimeout.
	RequestTimeout time.Duration
	// HubID names the hub that uses this Store in the fleet's session
	// records (fleet.go; ClientInfo.HubID); hubs that share a Prefix need
	// distinct ones, so each hub has its own Store. If empty, the host
	// name and a random suffix (new at each New). Programs without etcd
	// have no hub ID.
	HubID string
	// SessionTTL is the lease of the hub's session records: they vanish
	// this long after the hub stops keeping it alive (it died, or lost
	// etcd). Whole seconds, rounded up; etcd raises a TTL below its own
	// minimum (2 s with its default timing). If zero, DefaultSessionTTL.
	SessionTTL time.Duration
}

// Store is a warren.Store in etcd. It is safe for concurrent use.
type Store struct {
	cli       *clientv3.Client
	own       bool // cli was dialed by New, and Close closes it
	prefix    string
	endpoints string
	timeout   time.Duration

	hubID      string
	sessionTTL time.Duration
	fleetMu    sync.Mutex
	joined     bool // a Fleet of this Store is open
}

var (
	_ warren.VersionedStore = (*Store)(nil)
	_ warren.WatchableStore = (*Store)(nil)
)

// New returns a Store on cfg's etcd. Dialing does not wait for etcd: the
// first request reports an unreachable cluster.
func New(cfg Config) (*Store, error) {
	s := &Store{
		cli:     cfg.Client,
		prefix:  cfg.Prefix,
		timeout: cfg.RequestTimeout,
	}
	if s.prefix == "" {
		s.prefix = DefaultPrefix
	}
	if s.timeout <= 0 {
		s.timeout = DefaultRequestTimeout
	}
	if err := s.fleetConfig(cfg); err != nil {
		return nil, err
	}
	if s.cli == nil {
		if len(cfg.Endpoints) == 0 {
			return nil, &warren.ConfigError{Field: "endpoints", Reason: "required (or a Client)"}
		}
		dial := cfg.DialTimeout
		if dial <= 0 {
			dial = DefaultDialTimeout
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: dial})
		if err != nil {
			return nil, fmt.Errorf("etcdstore: connecting to etcd at %s: %w", strings.Join(cfg.Endpoints, ","), err)
		}
		s.cli, s.own = cli, true
	}
	s.endpoints = strings.Join(s.cli.Endpoints(), ",")
	return s, nil
}

// Client returns the etcd client the store uses.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix returns the key prefix of the registry.
func (s *Store) Prefix() string { return s.prefix }

// Close closes the etcd client if New dialed it.
func (s *Store) Close() error {
	if !s.own {
		return nil
	}
	if err := s.cli.Close(); err != nil {
		return fmt.Errorf("etcdstore: closing client: %w", err)
	}
	return nil
}

func (s *Store) clientKey(id string) string   { return s.prefix + "clients/" + id }
func (s *Store) addrKey(ip netip.Addr) string { return s.prefix + "addrs/" + ip.String() }
func (s *Store) clientsPrefix() string        { return s.prefix + "clients/" }
func (s *Store) idOf(key []byte) string       { return strings.TrimPrefix(string(key), s.clientsPrefix()) }
func (s *Store) reqCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

// fail wraps an etcd error with what was being done and where.
func (s *Store) fail(op string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("etcdstore: %s: etcd at %s did not answer in time (request timeout %v): %w", op, s.endpoints, s.timeout, err)
	}
	return fmt.Errorf("etcdstore: %s: etcd at %s: %w", op, s.endpoints, err)
}

// Load returns every entry, sorted by ClientID.
func (s *Store) Load(ctx context.Context) ([]warren.ClientEntry, error) {
	list, err := s.LoadVersions(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]warren.ClientEntry, len(list))
	for i, se := range list {
		out[i] = se.Entry
	}
	return out, nil
}

// LoadVersions returns every entry with its version, sorted by ClientID.
func (s *Store) LoadVersions(ctx context.Context) ([]warren.StoredEntry, error) {
	rctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(rctx, s.clientsPrefix(), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, s.fail("loading the registry", err)
	}
	out := make([]warren.StoredEntry, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		e, err := s.decode(kv.Key, kv.Value)
		if err != nil {
			return nil, err
		}
		out = append(out, warren.StoredEntry{Entry: e, Version: kv.ModRevision})
	}
	return out, nil
}

func (s *Store) decode(key, value []byte) (warren.ClientEntry, error) {
	var e warren.ClientEntry
	if err := json.Unmarshal(value, &e); err != nil {
		return e, fmt.Errorf("etcdstore: decoding %s: %w", key, err)
	}
	if e.ClientID != s.idOf(key) {
		return e, fmt.Errorf("etcdstore: %s holds client %q", key, e.ClientID)
	}
	return e, nil
}

// Get returns one entry and its version.
func (s *Store) Get(ctx context.Context, clientID string) (warren.StoredEntry, error) {
	rctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(rctx, s.clientKey(clientID))
	if err != nil {
		return warren.StoredEntry{}, s.fail("reading client "+clientID, err)
	}
	if len(resp.Kvs) == 0 {
		return warren.StoredEntry{}, fmt.Errorf("%w: %q", warren.ErrUnknownClient, clientID)
	}
	kv := resp.Kvs[0]
	e, err := s.decode(kv.Key, kv.Value)
	if err != nil {
		return warren.StoredEntry{}, err
	}
	return warren.StoredEntry{Entry: e, Version: kv.ModRevision}, nil
}

func checkID(id string) error {
	if id == "" || strings.ContainsAny(id, "/\x00") {
		return &warren.ConfigError{Field: "clientId", Value: id, Reason: "must be non-empty, without '/'"}
	}
	return nil
}

// Create stores e if neither its ClientID nor its AssignedIP is taken, in
// one transaction.
func (s *Store) Create(ctx context.Context, e warren.ClientEntry) (int64, error) {
	if err := checkID(e.ClientID); err != nil {
		return 0, err
	}
	val, err := json.Marshal(e)
	if err != nil {
		return 0, fmt.Errorf("etcdstore: encoding client %s: %w", e.ClientID, err)
	}
	ck := s.clientKey(e.ClientID)
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(ck), "=", 0)}
	ops := []clientv3.Op{clientv3.OpPut(ck, string(val))}
	orElse := []clientv3.Op{clientv3.OpGet(ck, clientv3.WithCountOnly())}
	if e.AssignedIP.IsValid() {
		ak := s.addrKey(e.AssignedIP)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(ak), "=", 0))
		ops = append(ops, clientv3.OpPut(ak, e.ClientID))
		orElse = append(orElse, clientv3.OpGet(ak))
	}
	rctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(rctx).If(cmps...).Then(ops...).Else(orElse...).Commit()
	if err != nil {
		return 0, s.fail("creating client "+e.ClientID, err)
	}
	if resp.Succeeded {
		return resp.Header.Revision, nil
	}
	if resp.Responses[0].GetResponseRange().Count > 0 {
		return 0, fmt.Errorf("%w: %s", warren.ErrClientExists, e.ClientID)
	}
	holder := ""
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		holder = string(kvs[0].Value)
	}
	return 0, fmt.Errorf("%w: %s is client %s's", warren.ErrAddressTaken, e.AssignedIP, holder)
}

// Update replaces the entry if it is still at version, in one transaction
// that also moves its address when e has a new one.
func (s *Store) Update(ctx context.Context, e warren.ClientEntry, version int64) (int64, error) {
	if err := checkID(e.ClientID); err != nil {
		return 0, err
	}
	cur, err := s.Get(ctx, e.ClientID)
	if err != nil {
		return 0, err
	}
	if cur.Version != version {
		return 0, fmt.Errorf("%w: client %s is at version %d, not %d", warren.ErrConflict, e.ClientID, cur.Version, version)
	}
	val, err := json.Marshal(e)
	if err != nil {
		return 0, fmt.Errorf("etcdstore: encoding client %s: %w", e.ClientID, err)
	}
	ck := s.clientKey(e.ClientID)
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(ck), "=", version)}
	ops := []clientv3.Op{clientv3.OpPut(ck, string(val))}
	moved := cur.Entry.AssignedIP != e.AssignedIP
	if moved {
		if cur.Entry.AssignedIP.IsValid() {
			ops = append(ops, clientv3.OpDelete(s.addrKey(cur.Entry.AssignedIP)))
		}
		if e.AssignedIP.IsValid() {
			ak := s.addrKey(e.AssignedIP)
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(ak), "=", 0))
			ops = append(ops, clientv3.OpPut(ak, e.ClientID))
		}
	}
	rctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(rctx).If(cmps...).Then(ops...).Else(clientv3.OpGet(ck)).Commit()
	if err != nil {
		return 0, s.fail("updating client "+e.ClientID, err)
	}
	if resp.Succeeded {
		return resp.Header.Revision, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	switch {
	case len(kvs) == 0:
		return 0, fmt.Errorf("%w: %q", warren.ErrUnknownClient, e.ClientID)
	case kvs[0].ModRevision != version:
		return 0, fmt.Errorf("%w: client %s is at version %d, not %d", warren.ErrConflict, e.ClientID, kvs[0].ModRevision, version)
	}
	return 0, fmt.Errorf("%w: %s", warren.ErrAddressTaken, e.AssignedIP)
}

// Put stores e, replacing any entry with the same ClientID. Like Create
// and Update it keeps addresses unique: an address another entry holds is
// refused with warren.ErrAddressTaken.
func (s *Store) Put(ctx context.Context, e warren.ClientEntry) error {
	for {
		cur, err := s.Get(ctx, e.ClientID)
		switch {
		case errors.Is(err, warren.ErrUnknownClient):
			_, err = s.Create(ctx, e)
			if errors.Is(err, warren.ErrClientExists) {
				continue
			}
			return err
		case err != nil:
			return err
		}
		_, err = s.Update(ctx, e, cur.Version)
		if errors.Is(err, warren.ErrConflict) || errors.Is(err, warren.ErrUnknownClient) {
			continue
		}
		return err
	}
}

// Remove deletes the entry and frees its address if it is still at version.
func (s *Store) Remove(ctx context.Context, clientID string, version int64) error {
	if err := checkID(clientID); err != nil {
		return err
	}
	cur, err := s.Get(ctx, clientID)
	if err != nil {
		return err
	}
	if cur.Version != version {
		return fmt.Errorf("%w: client %s is at version %d, not %d", warren.ErrConflict, clientID, cur.Version, version)
	}
	ck := s.clientKey(clientID)
	ops := []clientv3.Op{clientv3.OpDelete(ck)}
	if cur.Entry.AssignedIP.IsValid() {
		ops = append(ops, clientv3.OpDelete(s.addrKey(cur.Entry.AssignedIP)))
	}
	rctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(rctx).If(clientv3.Compare(clientv3.ModRevision(ck), "=", version)).Then(ops...).Else(clientv3.OpGet(ck, clientv3.WithCountOnly())).Commit()
	if err != nil {
		return s.fail("removing client "+clientID, err)
	}
	if resp.Succeeded {
		return nil
	}
	if resp.Responses[0].GetResponseRange().Count == 0 {
		return fmt.Errorf("%w: %q", warren.ErrUnknownClient, clientID)
	}
	return fmt.Errorf("%w: client %s changed", warren.ErrConflict, clientID)
}

// Delete removes the entry and frees its address; deleting a missing entry
// is not an error.
func (s *Store) Delete(ctx context.Context, clientID string) error {
	for {
		cur, err := s.Get(ctx, clientID)
		if errors.Is(err, warren.ErrUnknownClient) {
			return nil
		}
		if err != nil {
			return err
		}
		err = s.Remove(ctx, clientID, cur.Version)
		if errors.Is(err, warren.ErrConflict) {
			continue
		}
		if errors.Is(err, warren.ErrUnknownClient) {
			return nil
		}
		return err
	}
}

// Watch reports every change of the registry made after it returns, by any
// hub. It returns once etcd has registered the watch (or fails after the
// request timeout). While etcd is unreachable the channel stays open and
// quiet; the watch resumes where it was when etcd is back. It is closed when
// ctx ends or etcd can no longer resume it (its history compacted).
func (s *Store) Watch(ctx context.Context) (<-chan warren.StoreEvent, error) {
	wctx, cancel := context.WithCancel(ctx)
	wch := s.cli.Watch(wctx, s.clientsPrefix(), clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	timer := time.NewTimer(s.timeout)
	defer timer.Stop()
	select {
	case resp, ok := <-wch:
		if !ok || resp.Err() != nil || !resp.Created {
			cancel()
			err := errors.New("watch closed before it started")
			if ok && resp.Err() != nil {
				err = resp.Err()
			}
			return nil, s.fail("watching the registry", err)
		}
	case <-timer.C:
		cancel()
		return nil, s.fail("watching the registry", fmt.Errorf("no answer in %v: %w", s.timeout, context.DeadlineExceeded))
	case <-ctx.Done():
		cancel()
		return nil, ctx.Err()
	}
	out := make(chan warren.StoreEvent, 64)
	go func() {
		defer close(out)
		defer cancel()
		for resp := range wch {
			if resp.Err() != nil {
				return
			}
			for _, ev := range resp.Events {
				se := warren.StoreEvent{ClientID: s.idOf(ev.Kv.Key), Version: ev.Kv.ModRevision}
				if ev.Type == mvccpb.DELETE {
					se.Deleted = true
				} else {
					e, err := s.decode(ev.Kv.Key, ev.Kv.Value)
					if err != nil {
						// Not an entry this version can read: the reader's
						// next load reports it.
						return
					}
					se.Entry = e
				}
				select {
				case out <- se:
				case <-wctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}
