package hsguard

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable clock for a Guard.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *clock { return &clock{t: time.Unix(1_000_000, 0)} }

// loaded returns a Guard put under load by a queue of QueueLen/8 handshakes
// that are then done.
func loaded(t *testing.T, c *clock) *Guard {
	t.Helper()
	g := New(Config{QueueLen: 16, Now: c.now})
	for range 2 {
		if !g.Enter() {
			t.Fatal("Enter refused below the bound")
		}
	}
	if !g.UnderLoad() {
		t.Fatal("not under load at an eighth of the queue")
	}
	g.Done()
	g.Done()
	return g
}

func TestUnprovenSourceIsNotChargedOutOfLoad(t *testing.T) {
	g := New(Config{})
	src := netip.MustParseAddr("192.0.2.1")
	for i := range 100 {
		if !g.Admit(src, false) {
			t.Fatalf("unproven handshake %d refused on a quiet guard", i)
		}
		g.Done()
	}
	if st := g.Stats(); st != (Stats{}) {
		t.Errorf("Stats() = %+v, want zero", st)
	}
	// It used none of the source's credit.
	for i := range DefaultBurst {
		if !g.Allow(src) {
			t.Fatalf("proven handshake %d of the burst refused", i)
		}
	}
}

func TestProvenSourceIsNotChargedOutOfLoad(t *testing.T) {
	g := New(Config{})
	src := netip.MustParseAddr("192.0.2.1")
	for i := range 100 {
		if !g.Admit(src, true) {
			t.Fatalf("proven handshake %d refused on a quiet guard", i)
		}
		g.Done()
		if !g.Charge(src) {
			t.Fatalf("Charge %d refused on a quiet guard", i)
		}
	}
	if st := g.Stats(); st != (Stats{}) {
		t.Errorf("Stats() = %+v, want zero", st)
	}
}

func TestProvenSourceIsRateLimitedUnderLoad(t *testing.T) {
	c := newClock()
	g := loaded(t, c)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	admit := func(src netip.Addr) bool {
		ok := g.Admit(src, true)
		if ok {
			g.Done()
		}
		return ok
	}
	for i := range DefaultBurst {
		if !admit(a) {
			t.Fatalf("handshake %d of the burst refused", i)
		}
	}
	if admit(a) {
		t.Fatal("handshake past the burst admitted")
	}
	if !admit(b) {
		t.Fatal("another source was limited by the first one's flood")
	}
	// One handshake's worth of credit every 1/20 s.
	c.advance(time.Second / DefaultRate)
	if !admit(a) {
		t.Fatal("no credit after 1/20 s")
	}
	if admit(a) {
		t.Fatal("more than one handshake's credit after 1/20 s")
	}
	if got := g.Stats().RateLimited; got != 2 {
		t.Errorf("RateLimited = %d, want 2", got)
	}
}

func TestIPv6SourceIsItsSlash64(t *testing.T) {
	c := newClock()
	g := loaded(t, c)
	for i := range DefaultBurst {
		// Different hosts of one /64 share one bucket.
		src := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i + 1)})
		if !g.Admit(src, true) {
			t.Fatalf("handshake %d refused", i)
		}
		g.Done()
	}
	if g.Admit(netip.MustParseAddr("2001:db8::ffff"), true) {
		t.Error("a sixth host of the same /64 was admitted past the burst")
	}
	if !g.Admit(netip.MustParseAddr("2001:db8:0:1::1"), true) {
		t.Error("the next /64 was limited")
	}
}

func TestUnderLoadRefusesUnproven(t *testing.T) {
	c := newClock()
	g := loaded(t, c)
	if g.Admit(netip.MustParseAddr("192.0.2.1"), false) {
		t.Error("an unproven source was admitted under load")
	}
	if g.Queued() != 0 {
		t.Errorf("Queued() = %d after a refusal, want 0", g.Queued())
	}
}

func TestUnderLoadEndsAfterASecond(t *testing.T) {
	c := newClock()
	g := loaded(t, c)
	c.advance(UnderLoadAfter - time.Millisecond)
	if !g.UnderLoad() {
		t.Fatal("load ended early")
	}
	c.advance(time.Millisecond)
	if g.UnderLoad() {
		t.Fatal("still under load UnderLoadAfter after the queue drained")
	}
}

func TestFullQueueDropsNewHandshakes(t *testing.T) {
	g := New(Config{QueueLen: 3})
	src := netip.MustParseAddr("192.0.2.1")
	for range 3 {
		if !g.Enter() {
			t.Fatal("Enter refused below the bound")
		}
	}
	if g.Enter() || g.Admit(src, true) {
		t.Fatal("a handshake was admitted past the bound")
	}
	if got := g.Stats().QueueFull; got != 2 {
		t.Errorf("QueueFull = %d, want 2", got)
	}
	g.Done()
	if !g.Enter() {
		t.Error("no room after Done")
	}
}

func TestIdleSourcesAreForgotten(t *testing.T) {
	c := newClock()
	g := New(Config{Now: c.now})
	for i := range 100 {
		g.allow(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}))
	}
	c.advance(gcInterval)
	g.allow(netip.MustParseAddr("198.51.100.1"))
	g.mu.Lock()
	n := len(g.sources)
	g.mu.Unlock()
	if n != 1 {
		t.Errorf("%d sources remembered after a second idle, want 1", n)
	}
}

func TestAllowAllocatesNothingForAKnownSource(t *testing.T) {
	g := New(Config{Rate: 1_000_000_000, Burst: 1 << 20})
	src := netip.MustParseAddr("192.0.2.1")
	g.allow(src)
	if n := testing.AllocsPerRun(1000, func() { g.allow(src) }); n != 0 {
		t.Errorf("allow allocates %v times per call", n)
	}
}
