package quic

import (
	"testing"
	"time"

	"github.com/warrenvpn/warren/internal/hsguard"
)

// frozen is a clock that does not move: a source's credit never refills, and
// a Guard once under load stays so.
func frozen() time.Time { return time.Unix(1_000_000, 0) }

func TestGuardUnderLoadRetriesThenChargesSource(t *testing.T) {
	// An eighth of a queue of 8 is 1: one handshake in the queue puts the
	// Guard under load.
	g := hsguard.New(hsguard.Config{Burst: 1, QueueLen: 8, Now: frozen})
	l := listen(t, ListenConfig{Guard: g})

	// Out of load an attempt needs no Retry and is not charged.
	clientGetsIn(t, l, 10*time.Second)
	if l.Retries() != 0 {
		t.Fatalf("Retries() = %d out of load, want 0", l.Retries())
	}
	if g.Queued() != 0 {
		t.Fatalf("Queued() = %d after the handshake, want 0", g.Queued())
	}

	g.Enter() // under load from now on
	defer g.Done()
	clientGetsIn(t, l, 10*time.Second)
	if l.Retries() == 0 {
		t.Error("an attempt under load got in without a Retry")
	}
	// The source's credit (a burst of 1) went to that attempt: its next
	// is refused once its token has proven its address.
	s := newStreamless(t, "127.0.0.1")
	if _, err := s.dial(l); err == nil {
		t.Error("a source over its rate completed a handshake under load")
	}
	// A first flight of two Initial packets (a post-quantum key share
	// does not fit in one) is refused, and counted, once per packet, and
	// again for each packet the refused client sends again.
	if got := g.Stats().RateLimited; got < 1 || got > 6 {
		t.Errorf("RateLimited = %d, want 1 to 6", got)
	}
}
