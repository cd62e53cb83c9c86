package etcdstore

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/warrenvpn/warren"
)

// The fleet's directory
//
// Store is a warren.RouteDirectory: a hub joining the fleet takes a lease
// (RouteLeaseTTL, kept alive while the hub runs) and, under it, writes
//
//	<prefix>hubs/<hex of the hub's public key>  its warren.HubRecord as JSON
//	<prefix>routes/<ip>                          hex of the key of the hub serving ip
//
// When the hub stops (or dies, and the lease expires) its records go. A
// route is deleted only if it still names the hub deleting it, so a client
// that moved to another hub keeps the route that hub wrote.

// RouteLeaseTTL is the lease of a hub's directory records, in seconds: how
// long the records of a hub that died without leaving outlive it.
const RouteLeaseTTL = 5

var _ warren.RouteDirectory = (*Store)(nil)

func (s *Store) hubsPrefix() string            { return s.prefix + "hubs/" }
func (s *Store) routesPrefix() string          { return s.prefix + "routes/" }
func (s *Store) hubKey(k warren.Key) string    { return s.hubsPrefix() + hex.EncodeToString(k[:]) }
func (s *Store) routeKey(ip netip.Addr) string { return s.routesPrefix() + ip.String() }

// member is a hub's membership of the fleet.
type member struct {
	s     *Store
	lease clientv3.LeaseID
	hub   string // hex of the hub's key, the value of its routes
	stop  context.CancelFunc
	done  chan struct{} // closed when the keepalive channel is
	lost  chan struct{} // closed when the lease is lost before Leave
	once  sync.Once
}

// JoinRoutes publishes self under a new lease kept alive until Leave.
func (s *Store) JoinRoutes(ctx context.Context, self warren.HubRecord) (warren.RouteMember, error) {
	body, err := json.Marshal(self)
	if err != nil {
		return nil, fmt.Errorf("etcdstore: encoding hub record: %w", err)
	}
	rctx, cancel := s.reqCtx(ctx)
	defer cancel()
	grant, err := s.cli.Grant(rctx, RouteLeaseTTL)
	if err != nil {
		return nil, s.fail("granting the route lease", err)
	}
	if _, err := s.cli.Put(rctx, s.hubKey(self.PublicKey), string(body), clientv3.WithLease(grant.ID)); err != nil {
		_, _ = s.cli.Revoke(context.Background(), grant.ID)
		return nil, s.fail("publishing the hub", err)
	}
	kctx, stop := context.WithCancel(context.Background())
	ka, err := s.cli.KeepAlive(kctx, grant.ID)
	if err != nil {
		stop()
		return nil, s.fail("keeping the route lease", err)
	}
	m := &member{s: s, lease: grant.ID, hub: hex.EncodeToString(self.PublicKey[:]), stop: stop, done: make(chan struct{}), lost: make(chan struct{})}
	go func() {
		defer close(m.done)
		for range ka {
		}
		if kctx.Err() == nil {
			close(m.lost)
		}
	}()
	return m, nil
}

// PutRoute records that this hub serves addr.
func (m *member) PutRoute(ctx context.Context, addr netip.Addr) error {
	rctx, cancel := m.s.reqCtx(ctx)
	defer cancel()
	if _, err := m.s.cli.Put(rctx, m.s.routeKey(addr), m.hub, clientv3.WithLease(m.lease)); err != nil {
		return m.s.fail("publishing route "+addr.String(), err)
	}
	return nil
}

// DeleteRoute removes addr's route if it still names this hub.
func (m *member) DeleteRoute(ctx context.Context, addr netip.Addr) error {
	rctx, cancel := m.s.reqCtx(ctx)
	defer cancel()
	k := m.s.routeKey(addr)
	_, err := m.s.cli.Txn(rctx).If(clientv3.Compare(clientv3.Value(k), "=", m.hub)).Then(clientv3.OpDelete(k)).Commit()
	if err != nil {
		return m.s.fail("withdrawing route "+addr.String(), err)
	}
	return nil
}

// Lost is closed when the lease is lost: the keepalives went unanswered
// for the lease's lifetime.
func (m *member) Lost() <-chan struct{} { return m.lost }

// Leave revokes the lease: every record of the hub goes.
func (m *member) Leave(ctx context.Context) error {
	var err error
	m.once.Do(func() {
		m.stop()
		<-m.done
		rctx, cancel := m.s.reqCtx(ctx)
		defer cancel()
		if _, e := m.s.cli.Revoke(rctx, m.lease); e != nil {
			err = m.s.fail("withdrawing the hub's routes", e)
		}
	})
	return err
}

// Watch reports a Reset, the directory as it is, then its changes. The
// channel closes when ctx ends or the watch breaks.
func (m *member) Watch(ctx context.Context) (<-chan warren.RouteEvent, error) {
	s := m.s
	rctx, cancel := s.reqCtx(ctx)
	resp, err := s.cli.Txn(rctx).Then(
		clientv3.OpGet(s.hubsPrefix(), clientv3.WithPrefix()),
		clientv3.OpGet(s.routesPrefix(), clientv3.WithPrefix()),
	).Commit()
	cancel()
	if err != nil {
		return nil, s.fail("loading the route directory", err)
	}
	var initial []warren.RouteEvent
	initial = append(initial, warren.RouteEvent{Reset: true})
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			if ev, ok := s.fleetEvent(kv, false); ok {
				initial = append(initial, ev)
			}
		}
	}
	wctx, wcancel := context.WithCancel(ctx)
	wch := s.cli.Watch(wctx, s.prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1), clientv3.WithPrevKV())
	out := make(chan warren.RouteEvent, len(initial)+64)
	for _, ev := range initial {
		out <- ev
	}
	go func() {
		defer close(out)
		defer wcancel()
		for resp := range wch {
			if resp.Err() != nil {
				return
			}
			for _, e := range resp.Events {
				kv := e.Kv
				if e.Type == mvccpb.DELETE && e.PrevKv != nil {
					kv = e.PrevKv
				}
				ev, ok := s.fleetEvent(kv, e.Type == mvccpb.DELETE)
				if !ok {
					continue
				}
				select {
				case out <- ev:
				case <-wctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// fleetEvent decodes a hubs/ or routes/ record; other keys are not events.
func (s *Store) fleetEvent(kv *mvccpb.KeyValue, deleted bool) (warren.RouteEvent, bool) {
	key := string(kv.Key)
	switch {
	case strings.HasPrefix(key, s.hubsPrefix()):
		var rec warren.HubRecord
		if deleted && len(kv.Value) == 0 {
			b, err := hex.DecodeString(strings.TrimPrefix(key, s.hubsPrefix()))
			if err != nil || len(b) != len(rec.PublicKey) {
				return warren.RouteEvent{}, false
			}
			copy(rec.PublicKey[:], b)
		} else if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return warren.RouteEvent{}, false
		}
		return warren.RouteEvent{Hub: &rec, Deleted: deleted}, true
	case strings.HasPrefix(key, s.routesPrefix()):
		ip, err := netip.ParseAddr(strings.TrimPrefix(key, s.routesPrefix()))
		if err != nil {
			return warren.RouteEvent{}, false
		}
		ev := warren.RouteEvent{Addr: ip, Deleted: deleted}
		if !deleted {
			k, err := parseHubKey(string(kv.Value))
			if err != nil {
				return warren.RouteEvent{}, false
			}
			ev.HubKey = k
		}
		return ev, true
	}
	return warren.RouteEvent{}, false
}

func parseHubKey(h string) (warren.Key, error) {
	var k warren.Key
	b, err := hex.DecodeString(h)
	if err != nil {
		return k, err
	}
	if len(b) != len(k) {
		return k, errors.New("not a key")
	}
	copy(k[:], b)
	return k, nil
}
