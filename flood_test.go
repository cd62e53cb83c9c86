package warren

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/curve25519"
)

// The flood tests run the flooder (testdata/flooder) as a separate program
// built without the race detector, so it floods as fast as an attacker's
// program would and the hub's CPU time can be read with
// getrusage(RUSAGE_SELF) apart from the flooder's.

// flooder builds testdata/flooder into the test's temporary directory
// (the go command's cache makes every build after the first a link) and
// returns its path.
func flooder(t testing.TB) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go command to build the flooder: %v", err)
	}
	path := filepath.Join(t.TempDir(), "flooder")
	if out, err := exec.Command(goTool, "build", "-o", path, "./testdata/flooder").CombinedOutput(); err != nil {
		t.Fatalf("building the flooder: %v\n%s", err, out)
	}
	return path
}

// flood is a running flooder process.
type flood struct {
	t     testing.TB
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	last  floodCount
	done  chan struct{}
}

// floodCount is what a flooder reports: attempts started and bogus
// handshake messages that reached the hub's listener.
type floodCount struct{ attempts, delivered uint64 }

// startFlood starts a flooder of the given kind against target from the
// loopback source addresses srcs. It stops when the test ends.
func startFlood(t testing.TB, kind, target string, srcs []string, workers int) *flood {
	t.Helper()
	cmd := exec.Command(flooder(t), kind, target, strings.Join(srcs, "+"), strconv.Itoa(workers))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f := &flood{t: t, cmd: cmd, stdin: stdin, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var c floodCount
			if _, err := fmt.Sscanf(sc.Text(), "flood %d %d", &c.attempts, &c.delivered); err == nil {
				f.mu.Lock()
				f.last = c
				f.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { f.stop() })
	return f
}

// count returns the flooder's latest report (it reports every 100 ms).
func (f *flood) count() floodCount {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// stop ends the flooder and waits for it.
func (f *flood) stop() floodCount {
	if f.stdin != nil {
		f.stdin.Close()
		f.stdin = nil
		<-f.done
		_ = f.cmd.Wait()
	}
	return f.count()
}

// waitRate waits until the flooder has run for a while and returns its
// attempts per second over the last second.
func (f *flood) rate() float64 {
	a := f.count()
	start := time.Now()
	time.Sleep(time.Second)
	b := f.count()
	return float64(b.attempts-a.attempts) / time.Since(start).Seconds()
}

// cpuTime returns the CPU time, user and system, this process has used.
func cpuTime(t testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}






// connectTimes connects a client n times, one after the other, and returns
// how long each Connect took; it fails the test if one takes 2 s or more.
func connectTimes(t *testing.T, cfg ClientConfig, n int) []time.Duration {
	t.Helper()
	var times []time.Duration
	for i := range n {
		c, _, err := startClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		_, err = c.Connect(ctx)
		took := time.Since(start)
		cancel()
		c.Close()
		if err != nil {
			t.Fatalf("connect %d under the flood failed after %v: %v", i+1, took, err)
		}
		times = append(times, took)
	}
	t.Logf("connect times under the flood: %v", times)
	for i, d := range times {
		if d >= 2*time.Second {
			t.Errorf("connect %d took %v, want under 2 s", i+1, d)
		}
	}
	return times
}

// floodAndConnect runs a flood and connects a legitimate client during it,
// logging the flood's rate and the hub's CPU time per bogus attempt.
func floodAndConnect(t *testing.T, h *testHub, cfg ClientConfig, kind, target string, srcs []string, workers int) {
	t.Helper()
	f := startFlood(t, kind, target, srcs, workers)
	waitFor(t, 30*time.Second, "the flood to start", func() bool { return f.count().attempts > 0 })
	rate := f.rate()
	cpu0, n0 := cpuTime(t), f.count()
	connectTimes(t, cfg, 5)
	cpu1, n1 := cpuTime(t), f.count()
	end := f.stop()
	bogus := n1.attempts - n0.attempts
	t.Logf("%s flood: %.0f attempts/s from %d source(s); %d attempts in all, %d delivered a bogus handshake message",
		kind, rate, len(srcs), end.attempts, end.delivered)
	if bogus > 0 {
		t.Logf("hub CPU (hub and legitimate client, this process) per bogus attempt: %v (%v over %d attempts)",
			(cpu1-cpu0)/time.Duration(bogus), cpu1-cpu0, bogus)
	}
	t.Logf("handshake drops: %+v, handshakes failed: %d", h.Statistics().HandshakeDrops, h.Statistics().HandshakesFailed)
}

// sources returns n loopback addresses from 127.0.<third>.1 on: all local
// on Linux.
func sources(third, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("127.0.%d.%d", third, i+1))
	}
	return out
}

func TestClientGetsInDuringWebSocketHandshakeFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("floods the hub for several seconds")
	}
	h := newTestHub(t, func(c *ServerConfig) { c.TransportMode = TransportWebSocket })
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	// The flood comes from 127.0.0.2, the client from 127.0.0.1.
	floodAndConnect(t, h, withTransport(b.Config, ClientWebSocket), "ws", h.Addr().String(), []string{"127.0.0.2"}, 32)
	if st := h.Statistics().HandshakeDrops; st.RateLimited == 0 {
		t.Errorf("HandshakeDrops.RateLimited = 0 after a flood from one address")
	}
}

func TestClientGetsInDuringQUICHandshakeFloodFromManySources(t *testing.T) {
	if testing.Short() {
		t.Skip("floods the hub for several seconds")
	}
	h := newTestHub(t, func(c *ServerConfig) { c.TransportMode = TransportQUIC })
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	floodAndConnect(t, h, withTransport(b.Config, ClientQUIC), "quic", h.QUICAddr().String(), sources(9, 64), 256)
}

func TestWireGuardPeerGetsInDuringInitiationFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("floods the hub for several seconds")
	}
	for _, kind := range []string{"wg-random", "wg-mac1"} {
		t.Run(kind, func(t *testing.T) {
			h := newWGTestHub(t, func(c *ServerConfig) { c.TransportMode = TransportWireGuard })
			b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "alice"})
			if err != nil {
				t.Fatal(err)
			}
			pub, err := curve25519.X25519(h.cfg.WGPrivateKey[:], curve25519.Basepoint)
			if err != nil {
				t.Fatal(err)
			}
			keyText, _ := Key(pub).MarshalText()
			target := h.WGAddr().String() + "@" + string(keyText)
			floodAndConnect(t, h, withTransport(b.Config, ClientWireGuard), kind, target, []string{"127.0.0.2"}, 4)
		})
	}
}
