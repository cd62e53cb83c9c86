package ws

import (
	"testing"
	"time"

	"github.com/warrenvpn/warren/internal/hsguard"
)

// frozen is a clock that does not move, so a source's credit never refills.
func frozen() time.Time { return time.Unix(1_000_000, 0) }

func TestGuardChargesSourceBeforeTLSAndHoldsQueuePlace(t *testing.T) {
	// An eighth of a queue of 8 is 1: one handshake in the queue puts the
	// Guard under load; the frozen clock keeps it there.
	g := hsguard.New(hsguard.Config{Burst: 1, QueueLen: 8, Now: frozen})
	l := listen(t, ListenConfig{Guard: g})

	// Out of load a source is not charged. Its first connection takes a
	// place in the queue with its first byte and keeps it through the TLS
	// handshake it never finishes, which puts the Guard under load.
	first := dialFrom(t, l, "127.0.4.1")
	if _, err := first.Write([]byte{0x16}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a queue place for the first connection", func() bool { return g.Queued() == 1 })
	if got := g.Stats().RateLimited; got != 0 {
		t.Errorf("RateLimited = %d out of load, want 0", got)
	}

	// Under load the source is charged: its second connection takes its
	// credit (a burst of 1), its third is closed at accept, unanswered.
	second := dialFrom(t, l, "127.0.4.1")
	third := dialFrom(t, l, "127.0.4.1")
	closedWithin(t, third, 10*time.Second)
	if got := g.Stats().RateLimited; got != 1 {
		t.Errorf("RateLimited = %d, want 1", got)
	}
	if !isOpen(first) || !isOpen(second) {
		t.Error("a connection within the source's credit was closed")
	}
	second.Close()

	// Another source is not limited, and a client gets through.
	accepted := acceptOne(t, l)
	c, err := Dial(ctxTimeout(t, 10*time.Second), wssURL(l), DialConfig{ServerCertHash: testPin()})
	if err != nil {
		t.Fatalf("a client from another source: %v", err)
	}
	c.Close()
	if s := <-accepted; s != nil {
		s.Close()
	}

	// The place is given back when the connection ends.
	first.Close()
	waitFor(t, "the queue to empty", func() bool { return g.Queued() == 0 })
}
