package warren

import (
	"bytes"
	"context"
	"maps"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenvpn/warren/handshake"
	"github.com/warrenvpn/warren/internal/packet"
	wsession "github.com/warrenvpn/warren/session"
	"github.com/warrenvpn/warren/transport/ws"
)

// Clients on different hubs
//
// A hub whose Store is a RouteDirectory joins the fleet at Start: it
// publishes its HubRecord (key, WebSocket URL, certificate hash) and, for
// every tunnel address it has a session for, a route naming it, all under
// its lease. Routes are published by a goroutine of their own
// (publishRoutes), never on the data path.
//
// Each hub watches the directory. For each other hub, the one of the pair
// with the lower public key dials the other (a Noise IK session with the
// hubs' own static keys over WebSocket, the code a client uses); the other
// accepts it because the dialler's key is a hub of the fleet. So each pair
// has one session, used both ways, redialled when it breaks.
//
// A packet for an address of the subnet with no local session (from a
// client or the engine) goes to the hub that the directory says serves it.
// A packet from a hub goes only to local sessions (never on to a third hub,
// so no loop), and only if its source is inside the subnet.

// fleetRetry bounds the wait between attempts to join, watch or dial.
const (
	meshRetryMin = 100 * time.Millisecond
	meshRetryMax = 5 * time.Second
)

// fleet is a hub's view of its fleet.
type mesh struct {
	dir RouteDirectory

	// Read on the data path without a lock; copied on write.
	remote atomic.Pointer[map[netip.Addr]Key] // address -> the hub serving it
	links  atomic.Pointer[map[Key]*session]   // hub -> the session to it

	mu      sync.Mutex
	hubs    map[Key]HubRecord
	dialers map[Key]context.CancelFunc
	closed  bool
	pending map[netip.Addr]struct{} // addresses whose route to publish
	kick    chan struct{}
}

func newMesh(dir RouteDirectory) *mesh {
	f := &mesh{
		dir:     dir,
		hubs:    map[Key]HubRecord{},
		dialers: map[Key]context.CancelFunc{},
		pending: map[netip.Addr]struct{}{},
		kick:    make(chan struct{}, 1),
	}
	f.remote.Store(&map[netip.Addr]Key{})
	f.links.Store(&map[Key]*session{})
	return f
}

// meshRoute returns the session to the hub serving dst, or nil.
func (s *Server) meshRoute(dst netip.Addr) *session {
	f := s.mesh
	if f == nil {
		return nil
	}
	hub, ok := (*f.remote.Load())[dst]
	if !ok {
		return nil
	}
	return (*f.links.Load())[hub]
}

// meshTouch queues ip's route to be published (or withdrawn) to match the
// local route table.
func (s *Server) meshTouch(ip netip.Addr) {
	f := s.mesh
	if f == nil {
		return
	}
	f.mu.Lock()
	f.pending[ip] = struct{}{}
	f.mu.Unlock()
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// isHub reports whether key is another hub of the fleet.
func (s *Server) isHub(key Key) bool {
	f := s.mesh
	if f == nil || key == s.cfg.PublicKey {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.hubs[key]
	return ok
}

// hubVerdict is the answer to a hub's handshake.
func (s *Server) hubVerdict() wsession.Verdict {
	return wsession.Verdict{Hello: handshake.ServerHello{
		AssignedPrefix:   netip.PrefixFrom(s.hubIP, s.cfg.Subnet.Bits()),
		Gateway:          s.hubIP,
		MTU:              s.cfg.MTU,
		KeepaliveSeconds: int(keepaliveInterval / time.Second),
	}}
}

// addLink makes ss the session to its hub, replacing any other, and
// reports false when the hub is closing.
func (s *Server) addLink(ss *session) bool {
	f := s.mesh
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	m := maps.Clone(*f.links.Load())
	old := m[ss.key]
	m[ss.key] = ss
	f.links.Store(&m)
	if old != nil {
		old.c.close(reasonReplaced, true)
	}
	s.log.Info("hub link up", "hub", ss.key, "remote", ss.remoteAddr())
	return true
}

// dropLink forgets ss, a hub session that ended.
func (s *Server) dropLink(ss *session) {
	f := s.mesh
	f.mu.Lock()
	defer f.mu.Unlock()
	if cur := (*f.links.Load())[ss.key]; cur == ss {
		m := maps.Clone(*f.links.Load())
		delete(m, ss.key)
		f.links.Store(&m)
		s.log.Info("hub link down", "hub", ss.key)
	}
}

// fromMesh delivers what another hub sent: to local sessions only, and
// only packets whose source is an address of the subnet.
func (s *Server) fromMesh(ss *session, bufs [][]byte, offset int, l *wsession.Lease) {
	routes := *s.routes.Load()
	ok := ss.passed[:0]
	var dropped uint64
	for _, b := range bufs {
		src, dst, valid := packet.Addrs(b[offset:])
		if !valid || !s.cfg.Subnet.Contains(src) || routes[dst] == nil {
			dropped++
			continue
		}
		ok = append(ok, b)
	}
	s.sendDown(ok, offset, true, false, l)
	clear(ok)
	ss.passed = ok[:0]
	addNonZero(&s.stats.noRoute, dropped)
}

// runMesh joins the fleet, keeps the hub's routes published and follows
// the directory until ctx ends; then it closes the hub sessions and leaves.
// A hub whose lease was lost (etcd unreachable for its lifetime) joins
// again. It is started by Start and owned by s.wg.
func (s *Server) runMesh(ctx context.Context) {
	defer s.wg.Done()
	defer s.closeMesh()
	var wg sync.WaitGroup // dialers
	defer wg.Wait()
	for ctx.Err() == nil {
		m := s.joinMesh(ctx)
		if m == nil {
			return
		}
		s.memberOf(ctx, m, &wg)
		lctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := m.Leave(lctx); err != nil {
			s.log.Debug("leaving the route directory", "err", err)
		}
		cancel()
	}
}

// joinMesh joins, retrying until it can; nil when ctx ends first.
func (s *Server) joinMesh(ctx context.Context) RouteMember {
	self := HubRecord{PublicKey: s.cfg.PublicKey, URL: s.wsURL(), CertHash: s.certHash}
	wait := meshRetryMin
	for {
		m, err := s.mesh.dir.JoinRoutes(ctx, self)
		if err == nil {
			s.log.Info("joined the route directory", "url", self.URL)
			return m
		}
		s.log.Warn("joining the route directory; retrying", "err", err, "in", wait)
		if !sleepCtx(ctx, wait) {
			return nil
		}
		wait = min(2*wait, meshRetryMax)
	}
}

// memberOf publishes the hub's routes through m and follows the directory
// until ctx ends or m's lease is lost.
func (s *Server) memberOf(ctx context.Context, m RouteMember, dialers *sync.WaitGroup) {
	f := s.mesh
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-m.Lost():
			s.log.Warn("route directory lease lost; joining again")
			cancel()
		case <-mctx.Done():
		}
	}()
	// Publish every route the hub has now; meshTouch queues later ones.
	s.mu.Lock()
	f.mu.Lock()
	for ip := range *s.routes.Load() {
		f.pending[ip] = struct{}{}
	}
	f.mu.Unlock()
	s.mu.Unlock()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { s.publishRoutes(mctx, m) })
	select {
	case f.kick <- struct{}{}:
	default:
	}
	wait := meshRetryMin
	for mctx.Err() == nil {
		ch, err := m.Watch(mctx)
		if err != nil {
			s.log.Warn("watching the route directory; retrying", "err", err, "in", wait)
			if !sleepCtx(mctx, wait) {
				return
			}
			wait = min(2*wait, meshRetryMax)
			continue
		}
		wait = meshRetryMin
		remote := map[netip.Addr]Key{}
		for ev := range ch {
			s.applyRouteEvent(ctx, remote, ev, dialers)
			if len(ch) == 0 {
				c := maps.Clone(remote)
				f.remote.Store(&c)
			}
		}
	}
}

// applyRouteEvent applies one change of the directory to remote (the
// watcher's own copy of the route table) and to the hub dialers.
func (s *Server) applyRouteEvent(ctx context.Context, remote map[netip.Addr]Key, ev RouteEvent, wg *sync.WaitGroup) {
	f := s.mesh
	switch {
	case ev.Reset:
		clear(remote)
	case ev.Hub != nil:
		rec := *ev.Hub
		if rec.PublicKey == s.cfg.PublicKey {
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if cancel := f.dialers[rec.PublicKey]; cancel != nil && (ev.Deleted || f.hubs[rec.PublicKey] != rec) {
			cancel()
			delete(f.dialers, rec.PublicKey)
		}
		if ev.Deleted {
			delete(f.hubs, rec.PublicKey)
			if l := (*f.links.Load())[rec.PublicKey]; l != nil {
				l.c.close(reasonRemoved, true)
			}
			return
		}
		f.hubs[rec.PublicKey] = rec
		// The hub with the lower key dials; the other accepts.
		if f.dialers[rec.PublicKey] == nil && !f.closed && bytes.Compare(s.cfg.PublicKey[:], rec.PublicKey[:]) < 0 {
			dctx, cancel := context.WithCancel(ctx)
			f.dialers[rec.PublicKey] = cancel
			wg.Go(func() { s.dialHub(dctx, rec) })
		}
	case ev.Addr.IsValid():
		if ev.Deleted || ev.HubKey == s.cfg.PublicKey {
			delete(remote, ev.Addr)
		} else {
			remote[ev.Addr] = ev.HubKey
		}
	}
}

// dialHub keeps a session to hub rec up until ctx ends.
func (s *Server) dialHub(ctx context.Context, rec HubRecord) {
	wait := meshRetryMin
	for ctx.Err() == nil {
		st, err := s.dialLink(ctx, rec)
		if err != nil {
			s.log.Debug("dialling hub; retrying", "hub", rec.PublicKey, "url", rec.URL, "err", err, "in", wait)
			if !sleepCtx(ctx, wait) {
				return
			}
			wait = min(2*wait, meshRetryMax)
			continue
		}
		wait = meshRetryMin
		select {
		case <-st.Done():
		case <-ctx.Done():
			st.Close(reasonShutdown.reason())
			<-st.Done()
		}
	}
}

// dialLink opens and starts a session to hub rec.
func (s *Server) dialLink(ctx context.Context, rec HubRecord) (*wsession.Session, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := ws.Dial(dctx, rec.URL, ws.DialConfig{ServerCertHash: rec.CertHash})
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(dctx, func() { conn.Close() })
	st, hello, err := wsession.Dial(conn, wsession.DialConfig{
		PrivateKey:      s.cfg.PrivateKey,
		PublicKey:       s.cfg.PublicKey,
		ServerPublicKey: rec.PublicKey,
		Version:         Version,
		Transport:       "websocket",
		Pool:            s.pool,
		Telemetry:       s.telemetry,
	})
	if !stop() || err != nil {
		conn.Close()
		if err == nil {
			err = dctx.Err()
		}
		return nil, err
	}
	ss := &session{
		srv:       s,
		c:         streamConduit{st},
		id:        "hub " + rec.PublicKey.String(),
		ip:        hello.Gateway,
		key:       rec.PublicKey,
		transport: "websocket",
		since:     time.Now(),
		hub:       true,
	}
	if !s.addLink(ss) {
		st.Abort(reasonShutdown.reason())
	}
	s.wg.Add(1) // done by ss.Closed
	st.Start(ss)
	return st, nil
}

// publishRoutes publishes the routes meshTouch queued until ctx ends.
func (s *Server) publishRoutes(ctx context.Context, m RouteMember) {
	f := s.mesh
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.kick:
		}
		f.mu.Lock()
		batch := f.pending
		f.pending = map[netip.Addr]struct{}{}
		f.mu.Unlock()
		failed := false
		for ip := range batch {
			var err error
			if (*s.routes.Load())[ip] != nil {
				err = m.PutRoute(ctx, ip)
			} else {
				err = m.DeleteRoute(ctx, ip)
			}
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				s.log.Warn("publishing a route", "ip", ip, "err", err)
				f.mu.Lock()
				f.pending[ip] = struct{}{}
				f.mu.Unlock()
				failed = true
			}
		}
		if failed {
			if !sleepCtx(ctx, time.Second) {
				return
			}
			select {
			case f.kick <- struct{}{}:
			default:
			}
		}
	}
}

// closeMesh ends the hub sessions and refuses new ones.
func (s *Server) closeMesh() {
	f := s.mesh
	f.mu.Lock()
	f.closed = true
	links := *f.links.Load()
	for _, cancel := range f.dialers {
		cancel()
	}
	f.mu.Unlock()
	for _, l := range links {
		l.c.close(reasonShutdown, true)
	}
}

// sleepCtx waits d and reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
