package warren

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/netip"
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

	"github.com/warrenvpn/warren/codec"
	fwdtesting "github.com/warrenvpn/warren/forward/testing"
	"github.com/warrenvpn/warren/internal/hsguard"
	"github.com/warrenvpn/warren/transport/ws"
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
func startFlood(t testing.TB, kind, target string, srcs []string, workers, perSec int) *flood {
	t.Helper()
	cmd := exec.Command(flooder(t), kind, target, strings.Join(srcs, "+"), strconv.Itoa(workers), strconv.Itoa(perSec))
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

// cpuTime returns the CPU time, user and system, this process has used.
func cpuTime(t testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// connectTimes connects a client n times, one after the other, and returns
// how long each Connect took; it fails the test if one takes limit or more.
func connectTimes(t *testing.T, cfg ClientConfig, n int, limit time.Duration) []time.Duration {
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
			t.Errorf("connect %d under the flood failed after %v: %v", i+1, took, err)
		}
		times = append(times, took)
	}
	t.Logf("connect times under the flood: %v", times)
	for i, d := range times {
		if d >= limit {
			t.Errorf("connect %d took %v, want under %v", i+1, d, limit)
		}
	}
	return times
}

// floodAndConnect runs a flood and connects a legitimate client during it,
// logging the flood's rate and the hub's CPU time per bogus attempt.
func floodAndConnect(t *testing.T, h *testHub, cfg ClientConfig, kind, target string, srcs []string, workers, perSec int, limit time.Duration) {
	t.Helper()
	f := startFlood(t, kind, target, srcs, workers, perSec)
	waitFor(t, 30*time.Second, "the flood to start", func() bool { return f.count().attempts > 0 })
	// Two seconds of flood alone: its rate, and what it costs the hub.
	start, cpu0, n0 := time.Now(), cpuTime(t), f.count()
	time.Sleep(2 * time.Second)
	cpu1, n1 := cpuTime(t), f.count()
	bogus := n1.attempts - n0.attempts
	t.Logf("%s flood: %.0f attempts/s from %d source(s)", kind, float64(bogus)/time.Since(start).Seconds(), len(srcs))
	if bogus > 0 {
		t.Logf("hub CPU per bogus attempt: %v (%v over %d attempts)", (cpu1-cpu0)/time.Duration(bogus), cpu1-cpu0, bogus)
	}
	connectTimes(t, cfg, 5, limit)
	end := f.stop()
	t.Logf("%d attempts in all, %d delivered their bogus message", end.attempts, end.delivered)
	t.Logf("handshake drops: %+v, handshakes failed: %d", h.Statistics().HandshakeDrops, h.Statistics().HandshakesFailed)
	if h.qln != nil {
		t.Logf("QUIC: %d Retries sent", h.qln.Retries())
	}
}

// udpFloodRate is the rate of the UDP floods, which do not wait for the hub:
// 6,000 packets a second, or 1,000 under the race detector, which makes the
// hub several times slower (wireguard-go's receive path about 300 µs a
// packet instead of 40 µs, on a loaded 2-core box), and so a flood of a given
// rate several times heavier, while the flooder, built without it, is not.
func udpFloodRate() int {
	if raceEnabled() {
		return 1000
	}
	return 6000
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
	// The per-source rate is the under-load defence. An eighth of a queue
	// of 64 is 8, so the flood's 32 workers, each holding a TLS handshake
	// in progress, put the hub under load, as a flood big enough to matter
	// does with the default queue of 1024 (under load from 128).
	h := startHubWithGuard(t, hsguard.Config{QueueLen: 64})
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	// The flood comes from 127.0.0.2, the client from 127.0.0.1.
	floodAndConnect(t, h, withTransport(b.Config, ClientWebSocket), "ws", h.Addr().String(), []string{"127.0.0.2"}, 32, 0, 2*time.Second)
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
	// Connection attempts that never complete, from 64 addresses: each
	// costs the flooder no cryptography. Under load the hub answers them
	// with Retries, which cost it no cryptography either and which the
	// flood never answers; the client answers its Retry and gets in.
	floodAndConnect(t, h, withTransport(b.Config, ClientQUIC), "quic-initial", h.QUICAddr().String(), sources(9, 64), 64, udpFloodRate(), 2*time.Second)
	if h.qln.Retries() == 0 {
		t.Error("the hub sent no Retry under the flood")
	}
}

func TestWireGuardPeerGetsInDuringInitiationFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("floods the hub for several seconds")
	}
	for _, tc := range []struct {
		kind  string
		limit time.Duration
	}{
		// Random bytes fail wireguard-go's MAC1 check, which costs a
		// BLAKE2s and no Diffie-Hellman.
		{"wg-random", 2 * time.Second},
		// A valid MAC1 (the hub's public key is in every bundle) makes
		// wireguard-go run a Diffie-Hellman per initiation; its queue
		// backs up, it goes under load and answers the peer's first
		// initiation with a cookie. WireGuard's initiator sends the next
		// one, with MAC2, only after REKEY_TIMEOUT (5 s), so under this
		// flood a peer gets in on its second initiation: 2 s after it.
		{"wg-mac1", 2*time.Second + 5*time.Second},
	} {
		kind := tc.kind
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
			floodAndConnect(t, h, withTransport(b.Config, ClientWireGuard), kind, target, []string{"127.0.0.2"}, 4, udpFloodRate(), tc.limit)
		})
	}
}

// startHubWithGuard is newTestHub over WebSocket with the handshake guard
// replaced before Start.
func startHubWithGuard(t *testing.T, g hsguard.Config) *testHub {
	t.Helper()
	kp, err := GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	eng := fwdtesting.New(fwdtesting.Options{})
	s, err := NewServer(ServerConfig{
		ListenAddr:    "127.0.0.1:0",
		PrivateKey:    kp.PrivateKey,
		Subnet:        netip.MustParsePrefix("10.8.0.0/24"),
		Forwarder:     eng,
		TransportMode: TransportWebSocket,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.guard = hsguard.New(g)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &testHub{Server: s, engine: eng}
}

// dialFrom opens a TCP connection to addr from the loopback address src.
func dialFrom(t *testing.T, src string, addr net.Addr) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestHandshakeDropCountersMove(t *testing.T) {
	drops := func(h *testHub) HandshakeDrops { return h.Statistics().HandshakeDrops }

	t.Run("rateLimited", func(t *testing.T) {
		// An eighth of a queue of 8 is 1: a connection holding a TLS
		// handshake in progress keeps the hub under load, where sources
		// are held to their rate.
		h := startHubWithGuard(t, hsguard.Config{QueueLen: 8})
		hold := dialFrom(t, "127.0.0.6", h.Addr())
		if _, err := hold.Write([]byte{0x16}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the held connection to put the hub under load", func() bool { return h.guard.UnderLoad() })
		// Far more connections than 5 at once and 20 a second allow, for
		// however long the box takes to open them.
		for range 200 {
			c := dialFrom(t, "127.0.0.3", h.Addr())
			c.Close()
			if drops(h).RateLimited > 0 {
				break
			}
		}
		waitFor(t, 10*time.Second, "RateLimited to move", func() bool { return drops(h).RateLimited > 0 })
		// Another source is not limited by it.
		clientWith(t, mustCreate(t, h, "alice"), ClientWebSocket)
	})

	t.Run("queueFull", func(t *testing.T) {
		h := startHubWithGuard(t, hsguard.Config{QueueLen: 1})
		// One byte of a TLS record: the hub takes a place in the queue
		// for it and waits in its TLS handshake for the rest.
		hold := dialFrom(t, "127.0.0.4", h.Addr())
		if _, err := hold.Write([]byte{0x16}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the first connection to hold the queue", func() bool { return h.guard.Queued() == 1 })
		c := dialFrom(t, "127.0.0.5", h.Addr())
		if _, err := c.Write([]byte{0x16}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "QueueFull to move", func() bool { return drops(h).QueueFull > 0 })
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Error("the hub answered a connection it dropped")
		}
	})

	t.Run("badMAC", func(t *testing.T) {
		h := newTestHub(t, func(c *ServerConfig) { c.TransportMode = TransportWebSocket })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := ws.Dial(ctx, "wss://"+h.Addr().String(), ws.DialConfig{ServerCertHash: h.CertHash()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		msg := make([]byte, 160)
		_, _ = rand.Read(msg)
		f, err := codec.AppendFrame(nil, codec.HandshakeInit, msg)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.WriteMessage(f); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "BadMAC to move", func() bool { return drops(h).BadMAC == 1 })
	})

	t.Run("unknownKey", func(t *testing.T) {
		h := newTestHub(t, func(c *ServerConfig) { c.TransportMode = TransportWebSocket })
		cfg := withTransport(mustCreate(t, h, "alice").Config, ClientWebSocket)
		stranger, _ := GenerateKeypair()
		cfg.PrivateKey, cfg.PublicKey = stranger.PrivateKey, stranger.PublicKey
		c, _, err := startClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := c.Connect(ctx); err == nil {
			t.Fatal("a stranger's key connected")
		}
		if d := drops(h); d.UnknownKey != 1 || d.BadMAC != 0 {
			t.Errorf("HandshakeDrops = %+v, want UnknownKey 1 and no BadMAC", d)
		}
	})
}

func mustCreate(t *testing.T, h *testHub, id string) *ClientBundle {
	t.Helper()
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: id})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
