package bench

import "testing"

// idleTestClients is the idle client count of TestIdleHeapFigures.
const idleTestClients = 20

// TestIdleHeapFigures runs the IdleHeap measurement over every transport in
// turn, as the suite does, and checks that each figure is a plausible heap
// per client: more than nothing (a session, a peer and a registry entry all
// hold state) and less than a megabyte. The transports follow one another
// so that each measurement runs while the previous hub is being released,
// which once made the WireGuard figure negative.
func TestIdleHeapFigures(t *testing.T) {
	for _, tr := range Transports {
		t.Run(tr, func(t *testing.T) {
			f := measureIdleHeap(t, tr, idleTestClients)
			t.Logf("KiB/session %.2f, KiB/peer %.2f, KiB/client %.2f, goroutines/session %.2f",
				f.Session, f.Peer, f.Client, f.Goroutines)
			for _, c := range []struct {
				name string
				v    float64
			}{{"KiB/session", f.Session}, {"KiB/peer", f.Peer}, {"KiB/client", f.Client}} {
				if c.v <= 0 || c.v > 1024 {
					t.Errorf("%s = %.2f, want more than 0 and at most 1024", c.name, c.v)
				}
			}
		})
	}
}
