package ws

import (
	"testing"
	"time"

	"github.com/warrenvpn/warren/internal/hsguard"
)

// frozen is a clock that does not move, so a source's credit never refills.
func frozen() time.Time { return time.Unix(1_000_000, 0) }

func TestGuardChargesSourceBeforeTLSAndHoldsQueuePlace(t *testing.T) {
	g := hsguard.New(hsguard.Config{Burst: 1, Now: frozen})
	l := listen(t, ListenConfig{Guard: g})

	// The source's one handshake: it takes a place in the queue with its
	// first byte and keeps it through the TLS handshake it never finishes.
	first := dialFrom(t, l, "127.0.4.1")
	if _, err := first.Write([]byte{0x16}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a queue place for the first connection", func() bool { return g.Queued() == 1 })

	// Its second is closed at accept, unanswered.
	second := dialFrom(t, l, "127.0.4.1")
	closedWithin(t, second, 10*time.Second)
	if got := g.Stats().RateLimited; got != 1 {
		t.Errorf("RateLimited = %d, want 1", got)
	}
	if !isOpen(first) {
		t.Error("the first connection was closed")
	}

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
