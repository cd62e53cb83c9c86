package warren

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenvpn/warren/forward"
	"github.com/warrenvpn/warren/internal/packet"
)

// rlPayload makes 1028-byte UDP packets: a round number for the arithmetic.
const rlPayload = 1000

// rlWindow is the pumps' window: below the delay queue's 63 such packets,
// so the limit only delays, and deep enough that a loaded machine's slow
// round trips do not hold the sender below the limit.
const rlWindow = 56

// pump sends UDP packets from c to an outside address as fast as a window
// of in-flight packets allows (sent minus arrived at the hub's engine minus
// dropped by the rate limit), until stop is closed. A window inside the
// delay queue's bound means the limit delays packets and drops none.
type pump struct {
	stop chan struct{}
	done chan struct{}
	sent atomic.Uint64
}

func startPump(t testing.TB, c *testClient, arrived func() uint64, window uint64) *pump {
	return startPumpOver(t, []*testClient{c}, arrived, window)
}

// startPumpOver is startPump taking turns over clients, one window for all.
func startPumpOver(t testing.TB, cs []*testClient, arrived func() uint64, window uint64) *pump {
	t.Helper()
	p := &pump{stop: make(chan struct{}), done: make(chan struct{})}
	// To the hub's own address (the test hubs' subnet is 10.8.0.0/24),
	// which the engine serves: inside a WireGuard client's AllowedIPs too.
	hub := netip.MustParseAddr("10.8.0.1")
	pkt := packet.BuildUDP(netip.AddrPortFrom(cs[0].ip, 4000), netip.AddrPortFrom(hub, 5000), make([]byte, rlPayload))
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			if p.sent.Load()-arrived() >= window {
				time.Sleep(200 * time.Microsecond)
				continue
			}
			c := cs[p.sent.Load()%uint64(len(cs))]
			if c.engine.Inject(pkt) == nil && p.sent.Add(1)%8 == 0 {
				// Leave the hub some CPU: 8 packets per 0.5 ms is still
				// ~16 MB/s, beyond every rate here.
				time.Sleep(500 * time.Microsecond)
			}
		}
	}()
	t.Cleanup(p.end)
	return p
}

func (p *pump) end() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

// measureRate returns the bytes per second arriving over d, after a settle.
func measureRate(count func() uint64, settle, d time.Duration) float64 {
	time.Sleep(settle)
	start, t0 := count(), time.Now()
	time.Sleep(d)
	return float64(count()-start) / time.Since(t0).Seconds()
}

// heldTo reports whether a measured rate shows the limit want holding: never
// above it by more than tol, and not below 30 % of it. The floor is loose
// because on a loaded two-core machine the release timer and the test's own
// senders, not the limit, are what falls short (seen: 0.4-0.85 of the
// limit with fuzzers running beside the test, 0.99-1.0 on a quiet machine);
// a rate above the limit is what would mean the limit failed.
func heldTo(got, want, tol float64) bool { return got >= want*0.3 && got <= want*(1+tol) }

func TestRateLimitHoldsClientToItsRate(t *testing.T) {
	for _, tr := range []ClientTransport{ClientWebSocket, ClientQUIC, ClientWireGuard} {
		t.Run(string(tr), func(t *testing.T) {
			const rate = 400_000
			const burst = 16 << 10
			h := newWGTestHub(t, nil)
			b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "slow", Security: &ClientSecurity{
				RateLimit: &RateLimit{BytesPerSec: rate, BurstBytes: burst},
			}})
			if err != nil {
				t.Fatal(err)
			}
			var c *testClient
			if tr == ClientWireGuard {
				c = wgTestClient(t, b)
			} else {
				c = clientWith(t, b, tr)
			}
			// The hub engine's byte count is the measure.
			arrived := func() uint64 { return h.engine.Stats().SentPackets + h.Statistics().Drops.RateLimit }
			const total = 1_000_000 // ~2.5 s at 400 KB/s
			p := startPump(t, c, arrived, rlWindow)
			// The clock starts once the burst has passed (and a WireGuard
			// handshake is done): from then on only the rate lets bytes through.
			var b1 uint64
			var t1 time.Time
			deadline := time.Now().Add(30 * time.Second)
			for {
				n := h.engine.Stats().SentBytes
				if t1.IsZero() && n >= burst {
					b1, t1 = n, time.Now()
				}
				if n >= total {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("sent %d packets, hub engine got %+v, hub stats %+v", p.sent.Load(), h.engine.Stats(), h.Statistics())
				}
				time.Sleep(2 * time.Millisecond)
			}
			elapsed := time.Since(t1)
			p.end()
			got := float64(h.engine.Stats().SentBytes-b1) / elapsed.Seconds()
			t.Logf("%s: %d bytes in %v after the burst: %.0f B/s (limit %d B/s), rate-limit drops %d",
				tr, h.engine.Stats().SentBytes-b1, elapsed.Round(time.Millisecond), got, rate, h.Statistics().Drops.RateLimit)
			if !heldTo(got, rate, 0.10) {
				t.Fatalf("rate %.0f B/s, want at most %d +10 %% (and not far below)", got, rate)
			}
		})
	}
}

func TestRateLimitIsSharedByAClientsSessions(t *testing.T) {
	const rate = 400_000
	h := newTestHub(t, nil)
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "two", Security: &ClientSecurity{
		MaxConnections: 2,
		RateLimit:      &RateLimit{BytesPerSec: rate, BurstBytes: 8 << 10},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ws := clientWith(t, b, ClientWebSocket)
	q := clientWith(t, b, ClientQUIC)
	if n := len(h.clientSessions("two")); n != 2 {
		t.Fatalf("%d sessions, want 2", n)
	}
	arrived := func() uint64 { return h.engine.Stats().SentPackets + h.Statistics().Drops.RateLimit }
	startPumpOver(t, []*testClient{ws, q}, arrived, rlWindow)
	got := measureRate(func() uint64 { return h.engine.Stats().SentBytes }, 300*time.Millisecond, 1500*time.Millisecond)
	t.Logf("two sessions together: %.0f B/s (limit %d B/s)", got, rate)
	if !heldTo(got, rate, 0.15) {
		t.Fatalf("two sessions together moved %.0f B/s, want at most the one limit %d +15 %%", got, rate)
	}
}

func TestSetClientRateLimitChangesLiveSessionWithinASecond(t *testing.T) {
	h := newTestHub(t, nil)
	ctx := context.Background()
	b, err := h.CreateClient(ctx, ClientSpec{ClientID: "c", Security: &ClientSecurity{
		RateLimit: &RateLimit{BytesPerSec: 150_000, BurstBytes: 8 << 10},
	}})
	if err != nil {
		t.Fatal(err)
	}
	c := connectBundle(t, b)
	bytes := func() uint64 { return h.engine.Stats().SentBytes }
	arrived := func() uint64 { return h.engine.Stats().SentPackets + h.Statistics().Drops.RateLimit }
	startPump(t, c, arrived, rlWindow)

	limiter := func() (float64, int, bool) {
		h.csMu.Lock()
		cs := h.clients["c"]
		h.csMu.Unlock()
		if cs == nil {
			return 0, 0, false
		}
		lim := cs.lim.Load()
		if lim == nil {
			return 0, 0, false
		}
		return float64(lim.Limit()), lim.Burst(), true
	}
	slow := measureRate(bytes, 300*time.Millisecond, 700*time.Millisecond)
	if err := h.SetClientRateLimit(ctx, "c", RateLimit{BytesPerSec: 500_000, BurstBytes: 8 << 10}); err != nil {
		t.Fatal(err)
	}
	// The live session's packets are charged to this bucket from the next
	// batch on: route reads it per batch.
	if r, b, ok := limiter(); !ok || r != 500_000 || b != 8<<10 {
		t.Fatalf("live limiter after SetClientRateLimit: %v B/s, burst %d (set: %v), want 500000 and 8192", r, b, ok)
	}
	fast := measureRate(bytes, 200*time.Millisecond, 800*time.Millisecond)
	e, err := h.GetClient(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if e.Security == nil || e.Security.RateLimit == nil || e.Security.RateLimit.BytesPerSec != 500_000 {
		t.Fatalf("registry holds %+v, want the new limit", e.Security)
	}
	if err := h.RemoveClientRateLimit(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := limiter(); ok {
		t.Fatal("a limiter is still live after RemoveClientRateLimit")
	}
	free := measureRate(bytes, 200*time.Millisecond, 800*time.Millisecond)
	t.Logf("150 KB/s limit: %.0f B/s; 500 KB/s: %.0f B/s; removed: %.0f B/s", slow, fast, free)
	// Upper bounds only: on a loaded machine the senders, not the limit,
	// can fall short (TestRateLimitHoldsClientToItsRate measures a held rate).
	if slow > 150_000*1.15 || fast > 500_000*1.15 {
		t.Fatalf("rates %.0f and %.0f B/s, want at most 150000 and 500000 +15 %%", slow, fast)
	}
	if e, _ := h.GetClient(ctx, "c"); e.Security.RateLimit != nil {
		t.Fatalf("registry still holds a limit: %+v", e.Security.RateLimit)
	}
}

func TestRateLimitQueuesThenDropsAndCountsTowardClient(t *testing.T) {
	h := newTestHub(t, nil)
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "c", Security: &ClientSecurity{
		RateLimit: &RateLimit{BytesPerSec: 100_000, BurstBytes: 2000},
	}})
	if err != nil {
		t.Fatal(err)
	}
	c := connectBundle(t, b)
	from := netip.MustParseAddr("198.51.100.9")
	const n = 300
	for range n {
		h.engine.Inject(packet.BuildUDP(netip.AddrPortFrom(from, 53), netip.AddrPortFrom(c.ip, 4000), make([]byte, rlPayload)))
	}
	drops := h.Statistics().Drops.RateLimit
	// 2000 bytes of burst pass one packet at once, the 64 KiB queue 63
	// more, and a few tokens come in while the test injects; the rest is
	// dropped.
	if drops < n-100 || drops > n-64 {
		t.Fatalf("%d of %d packets dropped by the rate limit, want those beyond the burst and the 64 KiB queue", drops, n)
	}
	got := 0
	for got < n-int(drops) {
		if _, err := next(t, c.engine, 5*time.Second); err != nil {
			t.Fatalf("client got %d packets of the %d queued: %v", got, n-int(drops), err)
		}
		got++
	}
	t.Logf("dropped %d, delivered %d after waiting", drops, got)
}

func TestRateLimitBurstSmallerThanMTUIsConfigError(t *testing.T) {
	h := newTestHub(t, nil)
	ctx := context.Background()
	small := &RateLimit{BytesPerSec: 1 << 20, BurstBytes: 500}
	_, err := h.CreateClient(ctx, ClientSpec{ClientID: "c", Security: &ClientSecurity{RateLimit: small}})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "security.rateLimit.burstBytes" || ce.Value != "500" {
		t.Fatalf("CreateClient with a 500-byte burst: %v, want a ConfigError on security.rateLimit.burstBytes", err)
	}
	if _, err := h.CreateClient(ctx, ClientSpec{ClientID: "c"}); err != nil {
		t.Fatal(err)
	}
	if err := h.SetClientRateLimit(ctx, "c", *small); !errors.As(err, &ce) {
		t.Fatalf("SetClientRateLimit with a 500-byte burst: %v, want a ConfigError", err)
	}
	if err := h.SetClientRateLimit(ctx, "nobody", RateLimit{BytesPerSec: 1000}); !errors.Is(err, ErrUnknownClient) {
		t.Fatalf("SetClientRateLimit on an unknown client: %v", err)
	}
	if e, _ := h.GetClient(ctx, "c"); e.Security != nil {
		t.Fatalf("a refused limit changed the registry: %+v", e.Security)
	}
	// 0 picks a burst of its own, and a burst of exactly one MTU is enough.
	for _, rl := range []RateLimit{{BytesPerSec: 1000}, {BytesPerSec: 1000, BurstBytes: DefaultMTU}} {
		if err := h.SetClientRateLimit(ctx, "c", rl); err != nil {
			t.Fatalf("%+v: %v", rl, err)
		}
	}
}

// countingEngine is a forward.Engine that counts bytes by source address
// and, with a rate, takes as long over each Send as a link of that rate
// would: a bottleneck the hub's egress must share out.
type countingEngine struct {
	rate  float64 // bytes per second; 0: no delay
	mu    sync.Mutex
	bySrc map[netip.Addr]uint64
}

func (e *countingEngine) Start(forward.Config) error { return nil }
func (e *countingEngine) Close() error               { return nil }

func (e *countingEngine) Send(bufs [][]byte, offset int) error {
	n := 0
	e.mu.Lock()
	for _, b := range bufs {
		b = b[offset:]
		src, _, _ := packet.Addrs(b)
		e.bySrc[src] += uint64(len(b))
		n += len(b)
	}
	e.mu.Unlock()
	if e.rate > 0 {
		time.Sleep(time.Duration(float64(n) / e.rate * float64(time.Second)))
	}
	return nil
}

func (e *countingEngine) count(src netip.Addr) uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.bySrc[src]
}

func TestPriorityShareOfSaturatedEgress(t *testing.T) {
	eng := &countingEngine{rate: 1_000_000, bySrc: map[netip.Addr]uint64{}}
	h := newTestHub(t, func(c *ServerConfig) { c.Forwarder = eng })
	ctx := context.Background()
	var clients []*testClient
	for _, spec := range []ClientSpec{{ClientID: "high", Priority: 7}, {ClientID: "low", Priority: 0}} {
		b, err := h.CreateClient(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, connectBundle(t, b))
	}
	high, low := clients[0], clients[1]
	// Both offer far more than the 1 MB/s egress.
	never := func() uint64 { return 0 }
	startPump(t, high, never, 1<<62)
	startPump(t, low, never, 1<<62)
	time.Sleep(300 * time.Millisecond)
	h0, l0 := eng.count(high.ip), eng.count(low.ip)
	time.Sleep(2 * time.Second)
	hb, lb := eng.count(high.ip)-h0, eng.count(low.ip)-l0
	ratio := float64(hb) / float64(max(lb, 1))
	t.Logf("priority 7: %d bytes (%.0f %%), priority 0: %d bytes (%.0f %%), ratio %.1f (documented 8)",
		hb, 100*float64(hb)/float64(hb+lb), lb, 100*float64(lb)/float64(hb+lb), ratio)
	if lb == 0 {
		t.Fatal("the priority-0 client was starved")
	}
	if ratio < 8*0.6 || ratio > 8*1.4 {
		t.Fatalf("share ratio %.1f, want 8 (weights priority+1) ±40 %%", ratio)
	}
}

func TestPipelineWithRateLimitAllocatesNothing(t *testing.T) {
	eng := &countingEngine{bySrc: map[netip.Addr]uint64{}}
	h := newTestHub(t, func(c *ServerConfig) { c.Forwarder = eng })
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "c", Security: &ClientSecurity{
		RateLimit: &RateLimit{BytesPerSec: 1 << 40, BurstBytes: 1 << 30},
	}})
	if err != nil {
		t.Fatal(err)
	}
	c := connectBundle(t, b)
	ss := h.clientSessions("c")[0]
	bufs := make([][]byte, 32)
	for i := range bufs {
		bufs[i] = packet.BuildUDP(netip.AddrPortFrom(c.ip, 4000), netip.MustParseAddrPort("198.51.100.7:5000"), make([]byte, rlPayload))
	}
	eng.count(c.ip) // the map entry exists before the measure
	h.route(ss, bufs, 0, nil)
	allocs := testing.AllocsPerRun(200, func() { h.route(ss, bufs, 0, nil) })
	if allocs != 0 {
		t.Fatalf("%.1f allocations per batch of %d with a rate limit that is not exceeded", allocs, len(bufs))
	}
	if h.Statistics().Drops.RateLimit != 0 {
		t.Fatal("packets dropped by a limit not exceeded")
	}
}

// BenchmarkRouteWithRateLimit runs the pipeline on batches of 32 packets
// from a client whose rate limit is configured and not exceeded.
func BenchmarkRouteWithRateLimit(b *testing.B) {
	eng := &countingEngine{bySrc: map[netip.Addr]uint64{}}
	h := newTestHub(b, func(c *ServerConfig) { c.Forwarder = eng })
	bundle, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "c", Security: &ClientSecurity{
		RateLimit: &RateLimit{BytesPerSec: 1 << 40, BurstBytes: 1 << 30},
	}})
	if err != nil {
		b.Fatal(err)
	}
	c := connectBundle(b, bundle)
	ss := h.clientSessions("c")[0]
	bufs := make([][]byte, 32)
	for i := range bufs {
		bufs[i] = packet.BuildUDP(netip.AddrPortFrom(c.ip, 4000), netip.MustParseAddrPort("198.51.100.7:5000"), make([]byte, rlPayload))
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(bufs) * len(bufs[0])))
	for b.Loop() {
		h.route(ss, bufs, 0, nil)
	}
}
