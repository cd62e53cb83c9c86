// Package hsguard protects the hub's handshakes from floods, in the shape of
// wireguard-go's: a per-source rate limit applied before any Diffie-Hellman,
// a bounded handshake queue that drops what does not fit, and an "under
// load" mode, entered when the queue passes an eighth of its bound, in which
// a handshake must prove its source address before it gets any work.
//
// One Guard is shared by the WebSocket and QUIC listeners and by the Noise
// responder that runs over both, so a flood on one transport puts both under
// load, and each handshake is charged to its source once:
//
//   - The WebSocket listener calls Charge with the TCP peer (or the PROXY
//     header's source) when it accepts a connection, before the TLS
//     handshake: a completed TCP handshake proves the address, so under
//     load the source is charged. It calls Enter once the connection has sent its
//     first byte, so silent connections hold no place in the queue (the
//     listener's pre-auth budget bounds those).
//   - The QUIC listener calls Admit when an attempt's first packet arrives,
//     before the TLS handshake. An attempt that carries a valid Retry token
//     has proven its address and is charged under load; one without is not (its
//     address may be spoofed, and charging it would let a spoofer use up a
//     real client's credit), and under load it is sent a Retry instead
//     (quic-go's VerifySourceAddress), so its address is proven before it
//     costs the hub anything but a Retry.
//   - The Noise responder calls Enter once message 1 has arrived, before
//     its two Diffie-Hellman operations; the transport has charged the source
//     already.
//
// A handshake holds its place in the queue from Admit or Enter until Done:
// while the hub works on it (TLS, WebSocket upgrade, Noise), not while it
// waits for a peer that has sent nothing. Over the bound (1024) a new
// handshake is dropped, not waited for, so accepting never blocks. The rate
// is 20 handshakes a second per source with a burst of 5, an IPv4 address or
// an IPv6 /64 being one source: wireguard-go's figures.
//
// As in wireguard-go, the per-source rate applies only under load (Charge):
// a hub that keeps up serves a whole office behind one NAT, or a hundred
// clients started at once on one test machine, without refusing any. A
// flood is what puts the hub under load: each attempt let through costs a
// TLS handshake, so the queue of handshakes in progress passes its eighth
// and from then on, for at least UnderLoadAfter, every proven source is held
// to its rate and unproven ones must prove their address first.
//
// The Guard also counts the Noise responder's refusals by reason: a message
// 1 that does not authenticate (what WireGuard calls a bad MAC) and one from
// an unknown key.
package hsguard

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// wireguard-go's figures (device/constants.go, ratelimiter).
const (
	// DefaultRate is the handshakes per second a source may start.
	DefaultRate = 20
	// DefaultBurst is how many handshakes a source may start at once.
	DefaultBurst = 5
	// DefaultQueueLen bounds the handshakes in the queue.
	DefaultQueueLen = 1024
	// UnderLoadAfter is how long the Guard stays under load after the queue
	// last held an eighth of its bound.
	UnderLoadAfter = time.Second

	// gcInterval is how often idle sources are forgotten: a source idle
	// this long has a full bucket, the same as a new one.
	gcInterval = time.Second
	// maxSources bounds the sources remembered between collections. A new
	// source past it is refused, which only an attacker holding
	// that many addresses (or IPv6 /64s) busy in one second can cause.
	maxSources = 1 << 16
)

// Config tunes a Guard. The zero value is wireguard-go's.
type Config struct {
	// Rate is the handshakes per second one source may start (proven sources only).
	// If zero, DefaultRate.
	Rate int
	// Burst is how many it may start at once. If zero, DefaultBurst.
	Burst int
	// QueueLen bounds the handshakes in the queue; the Guard is under load
	// from QueueLen/8. If zero, DefaultQueueLen.
	QueueLen int
	// Now is the clock. If nil, time.Now.
	Now func() time.Time
}

// Stats counts the handshakes a Guard dropped or saw fail, by reason.
type Stats struct {
	// RateLimited counts handshakes dropped because their source was over
	// its rate. A QUIC attempt whose first flight spans two Initial packets
	// is refused, and counted, once per packet.
	RateLimited uint64
	// QueueFull counts handshakes dropped because the queue was full.
	QueueFull uint64
	// BadMAC counts handshake messages 1 that did not authenticate.
	BadMAC uint64
	// UnknownKey counts handshake messages 1 from a key the hub does not
	// know.
	UnknownKey uint64
}

// Guard is a handshake queue bound, an under-load switch and a per-source
// rate limiter. Its methods are safe for concurrent use.
type Guard struct {
	queueLen  int64
	loadMark  int64
	cost      int64 // nanoseconds of credit one handshake takes
	maxTokens int64
	now       func() time.Time

	queued    atomic.Int64
	loadUntil atomic.Int64 // unix nanoseconds

	rateLimited, queueFull, badMAC, unknownKey atomic.Uint64

	mu      sync.Mutex
	sources map[netip.Prefix]*bucket
	lastGC  time.Time
}

// bucket is one source's token bucket, in nanoseconds of credit as in
// wireguard-go's ratelimiter: integer arithmetic, no allocation per check.
type bucket struct {
	last   time.Time
	tokens int64
}

// New returns a Guard.
func New(cfg Config) *Guard {
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cost := int64(time.Second) / int64(cfg.Rate)
	return &Guard{
		queueLen:  int64(cfg.QueueLen),
		loadMark:  max(int64(cfg.QueueLen)/8, 1),
		cost:      cost,
		maxTokens: cost * int64(cfg.Burst),
		now:       cfg.Now,
		sources:   make(map[netip.Prefix]*bucket),
		lastGC:    cfg.Now(),
	}
}

// Admit takes a place in the queue for a handshake from src and reports
// whether it may go on; if so, the caller must call Done once when the hub
// has finished with it. proven says whether src has been proven (a TCP
// peer, a QUIC attempt with a valid Retry token): a proven source is charged
// to its rate under load (see Charge). An unproven one is not charged, since its address
// may be spoofed, and under load it is refused: the caller should have asked
// for proof first. A refusal is counted, except of an unproven handshake,
// which is the caller's to count.
func (g *Guard) Admit(src netip.Addr, proven bool) bool {
	if !proven && g.UnderLoad() {
		return false
	}
	if proven && !g.Charge(src) {
		return false
	}
	return g.enter()
}

// Charge is Allow while the Guard is under load, and true otherwise: the
// per-source rate is the under-load defence, as in wireguard-go. A refusal
// is counted.
func (g *Guard) Charge(src netip.Addr) bool {
	if !g.UnderLoad() {
		return true
	}
	return g.Allow(src)
}

// Allow charges one handshake to src, whose address the caller has proven,
// and reports whether src had the credit: 20 a second with a burst of 5 (or
// as configured). A refusal is counted.
func (g *Guard) Allow(src netip.Addr) bool {
	if !g.allow(src) {
		g.rateLimited.Add(1)
		return false
	}
	return true
}

// Enter takes a place in the queue for a handshake whose source has been
// charged already, and reports whether it may go on; if so, the caller must
// call Done once. A refusal is counted.
func (g *Guard) Enter() bool {
	return g.enter()
}

func (g *Guard) enter() bool {
	n := g.queued.Add(1)
	if n > g.queueLen {
		g.queued.Add(-1)
		g.queueFull.Add(1)
		g.markLoad()
		return false
	}
	if n >= g.loadMark {
		g.markLoad()
	}
	return true
}

// Done gives back a place taken by Admit or Enter.
func (g *Guard) Done() {
	g.queued.Add(-1)
}

func (g *Guard) markLoad() {
	g.loadUntil.Store(g.now().Add(UnderLoadAfter).UnixNano())
}

// UnderLoad reports whether the queue has held an eighth of its bound within
// the last UnderLoadAfter (or holds it now).
func (g *Guard) UnderLoad() bool {
	if g.queued.Load() >= g.loadMark {
		g.markLoad()
		return true
	}
	return g.now().UnixNano() < g.loadUntil.Load()
}

// Queued returns the number of handshakes in the queue.
func (g *Guard) Queued() int {
	return int(g.queued.Load())
}

// BadMAC counts a handshake message 1 that did not authenticate.
func (g *Guard) BadMAC() { g.badMAC.Add(1) }

// UnknownKey counts a handshake message 1 from an unknown key.
func (g *Guard) UnknownKey() { g.unknownKey.Add(1) }

// Stats returns the counters.
func (g *Guard) Stats() Stats {
	return Stats{
		RateLimited: g.rateLimited.Load(),
		QueueFull:   g.queueFull.Load(),
		BadMAC:      g.badMAC.Load(),
		UnknownKey:  g.unknownKey.Load(),
	}
}

// SourceKey is what the rate is limited per: an IPv4 address, or the /64 an
// IPv6 address is in, since one host commonly holds a whole /64.
func SourceKey(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}

// allow charges one handshake to src's bucket and reports whether it had the
// credit. Idle sources are forgotten lazily, so the Guard owns no goroutine.
func (g *Guard) allow(src netip.Addr) bool {
	key := SourceKey(src)
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if now.Sub(g.lastGC) >= gcInterval {
		for k, b := range g.sources {
			if now.Sub(b.last) >= gcInterval {
				delete(g.sources, k)
			}
		}
		g.lastGC = now
	}
	b := g.sources[key]
	if b == nil {
		if len(g.sources) >= maxSources {
			return false
		}
		g.sources[key] = &bucket{last: now, tokens: g.maxTokens - g.cost}
		return true
	}
	b.tokens = min(b.tokens+now.Sub(b.last).Nanoseconds(), g.maxTokens)
	b.last = now
	if b.tokens < g.cost {
		return false
	}
	b.tokens -= g.cost
	return true
}
