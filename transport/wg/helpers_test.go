package wg

import (
	"crypto/ecdh"
	"crypto/rand"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	hubIP    = netip.MustParseAddr("10.8.0.1")
	clientIP = netip.MustParseAddr("10.8.0.2")
	loopback = netip.MustParseAddr("127.0.0.1")
)

type keypair struct{ priv, pub [32]byte }

func newKeypair(t testing.TB) keypair {
	t.Helper()
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var kp keypair
	copy(kp.priv[:], k.Bytes())
	copy(kp.pub[:], k.PublicKey().Bytes())
	return kp
}

func prefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// newDevice creates a Device that the test closes when it ends.
func newDevice(t testing.TB, cfg Config) *Device {
	t.Helper()
	d, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// endpoint is d's address on loopback.
func endpoint(d *Device) netip.AddrPort { return netip.AddrPortFrom(loopback, d.Port()) }

// sink records copies of the packets a Device receives.
type sink struct {
	mu   sync.Mutex
	pkts [][]byte
	cond chan struct{} // signalled (non-blocking) on every batch
}

func newSink() *sink { return &sink{cond: make(chan struct{}, 1)} }

func (s *sink) receive(bufs [][]byte) {
	s.mu.Lock()
	for _, b := range bufs {
		s.pkts = append(s.pkts, append([]byte(nil), b...))
	}
	s.mu.Unlock()
	select {
	case s.cond <- struct{}{}:
	default:
	}
}

// all returns what has been received so far.
func (s *sink) all() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.pkts...)
}

// waitFor waits until some received packet satisfies match, and returns it.
func (s *sink) waitFor(t testing.TB, timeout time.Duration, match func([]byte) bool) []byte {
	t.Helper()
	deadline := time.After(timeout)
	for {
		for _, p := range s.all() {
			if match(p) {
				return p
			}
		}
		select {
		case <-s.cond:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no matching packet within %v (got %d packets)", timeout, len(s.all()))
			return nil
		}
	}
}

// count returns how many received packets satisfy match.
func (s *sink) count(match func([]byte) bool) int {
	n := 0
	for _, p := range s.all() {
		if match(p) {
			n++
		}
	}
	return n
}

// waitEvent returns the next event from ch, failing after timeout.
func waitEvent(t testing.TB, ch <-chan PeerEvent, timeout time.Duration) PeerEvent {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(timeout):
		t.Fatalf("no peer event within %v", timeout)
		return PeerEvent{}
	}
}
