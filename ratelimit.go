package warren

import (
	"github.com/warrenvpn/warren/forward"

	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Rate limiting (DESIGN §4). A client's limit is one token bucket,
// golang.org/x/time/rate, that every one of its sessions draws on, in both
// directions: see ClientSecurity.RateLimit. It lives in the client's
// clientState, which the hub keeps by client ID for as long as the client is
// registered, so a client that reconnects does not come back with a full
// bucket.
//
// A packet the bucket cannot pay for now is not dropped at once: it waits in
// a small per-client delay queue, released by one timer in order as tokens
// come in, so a TCP sender inside the tunnel sees its round trip grow and
// backs off as it would behind a slow link. Only a packet that finds the
// queue full is dropped, counted in Statistics.Drops.RateLimit.

const (
	// rlQueuePackets bounds a client's delay queue in packets.
	rlQueuePackets = 64
	// rlQueueBytes bounds it in bytes: at most 64 KiB waits, which holds
	// the queue's delay to 64 ms at 1 MB/s.
	rlQueueBytes = 64 << 10
)

// clientState is what all the sessions of one client share on the hub: its
// rate limit with its delay queue, and its egress queue and priority
// (qos.go). Server.clientState makes it; sessions point to it.
type clientState struct {
	srv     *Server
	id      string
	applyMu sync.Mutex // serialises applyLimits

	lim atomic.Pointer[rate.Limiter] // nil: unlimited
	// queued is the packets waiting in q or being sent on by release, read
	// on the fast path without mu: while any wait, new ones queue behind
	// them, so the client's packets keep their order.
	queued atomic.Int32

	mu    sync.Mutex
	q     []delayed // ring, rlQueuePackets long once used
	head  int
	n     int
	bytes int
	out   int      // packets release took from q and is sending on
	free  [][]byte // buffers to copy waiting packets into
	timer *time.Timer
	armed bool
	run   sendRun // release's groups toward other clients

	relMu   sync.Mutex // one release at a time; guards up, down, scratch
	up      [][]byte
	down    [][]byte
	scratch [][]byte

	eg egressQueue // qos.go
}

// noHeadroom is the headroom in front of a queued packet's copy, zeroed.
var noHeadroom [forward.Headroom]byte

// delayed is a packet waiting for tokens: up from the client, or down
// toward it.
type delayed struct {
	buf  []byte // the packet at forward.Headroom
	down bool
}

// clientState returns the shared state of a client, making it on first use.
func (s *Server) clientState(id string) *clientState {
	s.csMu.Lock()
	defer s.csMu.Unlock()
	cs := s.clients[id]
	if cs == nil {
		cs = &clientState{srv: s, id: id}
		s.clients[id] = cs
	}
	return cs
}

// forgetClient drops a removed client's shared state; its waiting packets
// are released (unlimited) so nothing is held.
func (s *Server) forgetClient(id string) {
	s.csMu.Lock()
	cs := s.clients[id]
	delete(s.clients, id)
	s.csMu.Unlock()
	if cs != nil {
		cs.setLimit(nil, 0)
	}
}

// applyLimits gives a client's shared state the rate limit and priority its
// registry entry holds now. The registry is read under applyMu, so of two
// racing calls the last one applies the newest entry.
func (s *Server) applyLimits(id string) {
	cs := s.clientState(id)
	cs.applyMu.Lock()
	defer cs.applyMu.Unlock()
	if re, ok := s.reg.lookupID(id); ok {
		cs.apply(re.entry, s.cfg.MTU)
	}
}

// apply sets the limit and priority of e.
func (cs *clientState) apply(e ClientEntry, mtu int) {
	cs.eg.setPriority(e.Priority)
	var rl *RateLimit
	if e.Security != nil {
		rl = e.Security.RateLimit
	}
	cs.setLimit(rl, mtu)
}

// effectiveBurst is the bucket size of rl: BurstBytes, or when 0 a tenth of
// a second of BytesPerSec, at least one mtu-sized packet.
func effectiveBurst(rl RateLimit, mtu int) int {
	if rl.BurstBytes > 0 {
		return int(min(rl.BurstBytes, 1<<30))
	}
	return int(max(min(rl.BytesPerSec/10, 1<<30), int64(mtu)))
}

// setLimit changes the client's bucket at once for all its sessions; nil
// removes it, and packets waiting are released at once.
func (cs *clientState) setLimit(rl *RateLimit, mtu int) {
	if rl == nil {
		cs.lim.Store(nil)
	} else {
		burst := effectiveBurst(*rl, mtu)
		if l := cs.lim.Load(); l != nil {
			l.SetLimit(rate.Limit(rl.BytesPerSec))
			l.SetBurst(burst)
		} else {
			cs.lim.Store(rate.NewLimiter(rate.Limit(rl.BytesPerSec), burst))
		}
	}
	// Waiting packets are timed against the old rate: look again now.
	if cs.queued.Load() > 0 {
		cs.mu.Lock()
		cs.armLocked(0)
		cs.mu.Unlock()
	}
}

// admit charges the bucket for bufs, which go one way. It returns how many
// of them, from the front, may go on now; the rest have been copied into
// the delay queue, or dropped and counted when it is full. It allocates
// nothing once the queue's buffers exist.
func (cs *clientState) admit(bufs [][]byte, offset int, down bool) int {
	lim := cs.lim.Load()
	if lim == nil || len(bufs) == 0 {
		return len(bufs)
	}
	now := time.Now()
	pass := 0
	if cs.queued.Load() == 0 {
		// One charge for the whole batch when it fits, the usual case.
		total := 0
		for _, p := range bufs {
			total += len(p) - offset
		}
		if total <= lim.Burst() && lim.AllowN(now, total) {
			return len(bufs)
		}
		for pass < len(bufs) && lim.AllowN(now, cs.cost(lim, bufs[pass][offset:])) {
			pass++
		}
		if pass == len(bufs) {
			return pass
		}
	}
	cs.mu.Lock()
	var dropped uint64
	for _, p := range bufs[pass:] {
		if !cs.pushLocked(p[offset:], down) {
			dropped++
		}
	}
	cs.armLocked(-1)
	cs.mu.Unlock()
	addNonZero(&cs.srv.stats.rateLimit, dropped)
	return pass
}

// cost is what a packet takes from the bucket: its length, but never more
// than the bucket holds, so no packet waits forever.
func (cs *clientState) cost(lim *rate.Limiter, p []byte) int {
	return min(len(p), lim.Burst())
}

// pushLocked copies p into the delay queue, with forward.Headroom in front
// of it; false if the queue is full.
func (cs *clientState) pushLocked(p []byte, down bool) bool {
	if cs.n == rlQueuePackets || cs.bytes+len(p) > rlQueueBytes {
		return false
	}
	if cs.q == nil {
		cs.q = make([]delayed, rlQueuePackets)
	}
	var b []byte
	if k := len(cs.free); k > 0 {
		b = cs.free[k-1][:0]
		cs.free[k-1] = nil
		cs.free = cs.free[:k-1]
	}
	b = append(b, noHeadroom[:]...)
	cs.q[(cs.head+cs.n)%rlQueuePackets] = delayed{buf: append(b, p...), down: down}
	cs.n++
	cs.bytes += len(p)
	cs.queued.Store(int32(cs.n + cs.out))
	return true
}

// armLocked sets the release timer: after d, or when d < 0 when the bucket
// can pay for the packet at the head. It does nothing when the timer is
// already set, unless d is 0 (a limit changed).
func (cs *clientState) armLocked(d time.Duration) {
	if cs.n == 0 || (cs.armed && d != 0) {
		return
	}
	if d < 0 {
		d = 0
		if lim := cs.lim.Load(); lim != nil {
			need := float64(cs.cost(lim, cs.q[cs.head].buf[forward.Headroom:])) - lim.Tokens()
			if need > 0 && lim.Limit() > 0 {
				d = time.Duration(need / float64(lim.Limit()) * float64(time.Second))
			}
		}
	}
	cs.armed = true
	if cs.timer == nil {
		cs.timer = time.AfterFunc(d, cs.release)
	} else {
		cs.timer.Reset(d)
	}
}

// release sends on the waiting packets the bucket can pay for now, in
// order, and sets the timer for the rest.
func (cs *clientState) release() {
	cs.relMu.Lock()
	defer cs.relMu.Unlock()
	cs.mu.Lock()
	cs.armed = false
	lim := cs.lim.Load()
	now := time.Now()
	up, down := cs.up[:0], cs.down[:0]
	for cs.n > 0 {
		d := &cs.q[cs.head]
		if lim != nil && !lim.AllowN(now, cs.cost(lim, d.buf[forward.Headroom:])) {
			break
		}
		if d.down {
			down = append(down, d.buf)
		} else {
			up = append(up, d.buf)
		}
		cs.bytes -= len(d.buf) - forward.Headroom
		*d = delayed{}
		cs.head = (cs.head + 1) % rlQueuePackets
		cs.n--
	}
	cs.out = len(up) + len(down)
	cs.queued.Store(int32(cs.n + cs.out))
	cs.armLocked(-1)
	cs.mu.Unlock()

	if len(up) > 0 {
		cs.scratch = cs.srv.dispatchUp(cs, up, forward.Headroom, cs.scratch, &cs.run)
	}
	if len(down) > 0 {
		cs.srv.dispatchDown(down, forward.Headroom)
	}

	cs.mu.Lock()
	cs.free = append(cs.free, up...)
	cs.free = append(cs.free, down...)
	cs.out = 0
	cs.queued.Store(int32(cs.n))
	cs.mu.Unlock()
	clear(up)
	clear(down)
	cs.up, cs.down = up[:0], down[:0]
}

// stop ends the release timer; waiting packets are dropped.
func (cs *clientState) stop() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.timer != nil {
		cs.timer.Stop()
	}
	cs.armed = true // no timer is set again
}

// checkRateLimit validates a rate limit against the hub's MTU: the bucket
// must hold one MTU-sized packet, or that packet could never be sent.
func (s *Server) checkRateLimit(field string, sec *ClientSecurity) error {
	if sec == nil || sec.RateLimit == nil {
		return nil
	}
	if field != "" {
		field += "."
	}
	rl := sec.RateLimit
	if rl.BurstBytes != 0 && rl.BurstBytes < int64(s.cfg.MTU) {
		return configErr(field+"rateLimit.burstBytes", strconv.FormatInt(rl.BurstBytes, 10),
			fmt.Sprintf("smaller than one %d-byte packet (the hub's MTU); 0 picks a tenth of bytesPerSec, at least the MTU", s.cfg.MTU))
	}
	return nil
}

// SetClientRateLimit sets a client's rate limit, stores it in the registry,
// and applies it to the client's live sessions at once (see
// ClientSecurity.RateLimit).
func (s *Server) SetClientRateLimit(ctx context.Context, id string, rl RateLimit) error {
	return s.changeRateLimit(ctx, id, &rl)
}

// RemoveClientRateLimit lifts a client's rate limit, in the registry and on
// its live sessions at once; packets waiting for tokens go on.
func (s *Server) RemoveClientRateLimit(ctx context.Context, id string) error {
	return s.changeRateLimit(ctx, id, nil)
}

func (s *Server) changeRateLimit(ctx context.Context, id string, rl *RateLimit) error {
	_, err := s.mutate(ctx, id, func(e *ClientEntry) error {
		if e.Security == nil {
			if rl == nil {
				return nil
			}
			e.Security = &ClientSecurity{}
		}
		if rl == nil {
			e.Security.RateLimit = nil
		} else {
			r := *rl
			e.Security.RateLimit = &r
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.applyLimits(id)
	return nil
}
