package bench

import (
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	RunSwarmIfChild()
	goleak.VerifyTestMain(m)
}

// BenchmarkSessionThroughput is the root package's benchmark of that name
// (client engine → hub engine, tunnel MTU - 100 bytes) over every transport,
// WireGuard from a stock wireguard-go peer.
func BenchmarkSessionThroughput(b *testing.B) { RunGroup(b, "SessionThroughput") }

// BenchmarkPackets: packet throughput client → hub engine and client → hub
// → client, 1400 and 64 bytes, per transport.
func BenchmarkPackets(b *testing.B) { RunGroup(b, "Packets") }

// BenchmarkBaseline: two wireguard-go devices, the ChaCha20-Poly1305 bound
// (and Warren's Noise session beside it), TLS 1.3 with a record per packet,
// loopback TCP.
func BenchmarkBaseline(b *testing.B) { RunGroup(b, "Baseline") }

// BenchmarkTCP: TCP through the tunnel with netstack at both ends, beside
// two wireguard-go devices on tun/netstack.
func BenchmarkTCP(b *testing.B) { RunGroup(b, "TCP") }

// BenchmarkScale: aggregate throughput with 1, 10 and 100 clients.
func BenchmarkScale(b *testing.B) { RunGroup(b, "Scale") }

// BenchmarkHandshake: handshakes per second beside X25519.
func BenchmarkHandshake(b *testing.B) { RunGroup(b, "Handshake") }

// BenchmarkIdleHeap: the hub's heap per idle session.
func BenchmarkIdleHeap(b *testing.B) { RunGroup(b, "IdleHeap") }

// TestEveryCaseHasAGroupAndEveryComparisonACase keeps Cases, the Benchmark
// functions above and Comparisons in step.
func TestEveryCaseHasAGroupAndEveryComparisonACase(t *testing.T) {
	groups := map[string]bool{"SessionThroughput": true, "Packets": true, "Baseline": true, "TCP": true, "Scale": true, "Handshake": true, "IdleHeap": true}
	names := map[string]bool{}
	for _, c := range Cases() {
		head, _, _ := strings.Cut(c.Name, "/")
		if !groups[head] {
			t.Errorf("case %s is in no Benchmark function", c.Name)
		}
		if names[c.Name] {
			t.Errorf("case %s twice", c.Name)
		}
		names[c.Name] = true
	}
	for _, cmp := range Comparisons() {
		if !names[cmp.Figure] {
			t.Errorf("comparison of unknown figure %s", cmp.Figure)
		}
		if !names[cmp.Baseline] && cmp.Fixed == 0 {
			t.Errorf("comparison of %s with unknown baseline %s", cmp.Figure, cmp.Baseline)
		}
	}
}
