package netem_test

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/warrenvpn/warren/internal/netem"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// udpEcho starts a UDP echo server on loopback, closed with the test.
func udpEcho(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			c.WriteToUDP(buf[:n], from)
		}
	})
	t.Cleanup(func() { c.Close(); wg.Wait() })
	return c
}

func udpProxy(t *testing.T, target net.Addr, cfg netem.Config) (*netem.UDPProxy, *net.UDPConn) {
	t.Helper()
	p, err := netem.ListenUDP(target.String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	c, err := net.DialUDP("udp", nil, p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return p, c
}

// pingUDP sends one datagram and returns the round trip, or false after 2 s.
func pingUDP(t *testing.T, c *net.UDPConn, id uint32) (time.Duration, bool) {
	t.Helper()
	var msg [4]byte
	binary.BigEndian.PutUint32(msg[:], id)
	start := time.Now()
	if _, err := c.Write(msg[:]); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	c.SetReadDeadline(start.Add(2 * time.Second))
	for {
		n, err := c.Read(buf)
		if err != nil {
			return 0, false
		}
		if n == 4 && binary.BigEndian.Uint32(buf) == id {
			return time.Since(start), true
		}
	}
}

// TestUDPDelayAndJitterMeasuredByEcho: 30 ms up and 20 ms down, ±10 ms each,
// give round trips in [30 ms, 70 ms] plus scheduling slack (at most +50 ms
// on a loaded machine), a median near 50 ms (±20 ms), and visible spread.
func TestUDPDelayAndJitterMeasuredByEcho(t *testing.T) {
	echo := udpEcho(t)
	_, c := udpProxy(t, echo.LocalAddr(), netem.Config{
		Up:   netem.Link{Delay: 30 * time.Millisecond, Jitter: 10 * time.Millisecond},
		Down: netem.Link{Delay: 20 * time.Millisecond, Jitter: 10 * time.Millisecond},
	})
	var rtts []time.Duration
	for i := range 30 {
		rtt, ok := pingUDP(t, c, uint32(i))
		if !ok {
			t.Fatalf("ping %d lost on a lossless path", i)
		}
		rtts = append(rtts, rtt)
	}
	slices.Sort(rtts)
	t.Logf("rtt min %v median %v max %v", rtts[0], rtts[len(rtts)/2], rtts[len(rtts)-1])
	if rtts[0] < 30*time.Millisecond {
		t.Errorf("min rtt %v below the injected minimum 30 ms", rtts[0])
	}
	if m := rtts[len(rtts)/2]; m < 40*time.Millisecond || m > 70*time.Millisecond {
		t.Errorf("median rtt %v, want 50 ms ± 20 ms", m)
	}
	// The injected maximum is 70 ms; one echo that the scheduler of a
	// loaded machine holds back is not the proxy's doing, so the bound is
	// on the 80th percentile, not the maximum.
	if p80 := rtts[len(rtts)*8/10]; p80 > 120*time.Millisecond {
		t.Errorf("80th percentile rtt %v above 70 ms + 50 ms slack", p80)
	}
	if rtts[len(rtts)-1]-rtts[0] < 5*time.Millisecond {
		t.Errorf("rtt spread %v: no jitter shows", rtts[len(rtts)-1]-rtts[0])
	}
}

// TestUDPLossMatchesConfig: 25 % loss up and none down lets 75 % (± 5 points;
// the binomial spread of 2000 is 1 point) of 2000 echoes back.
func TestUDPLossMatchesConfig(t *testing.T) {
	echo := udpEcho(t)
	_, c := udpProxy(t, echo.LocalAddr(), netem.Config{Up: netem.Link{Loss: 0.25}, Seed: 7})
	const n = 600
	// One datagram in flight at a time (the next goes when the echo is back
	// or 30 ms have passed), so no socket buffer overflows on a loaded
	// machine and every loss is the proxy's. Late echoes still count.
	var mu sync.Mutex
	seen := make(map[uint32]bool)
	back := make(chan uint32, n)
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 16)
		for {
			c.SetReadDeadline(time.Now().Add(time.Second))
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			if k == 4 {
				id := binary.BigEndian.Uint32(buf)
				mu.Lock()
				seen[id] = true
				mu.Unlock()
				back <- id
			}
		}
	})
	var msg [4]byte
	for i := range n {
		binary.BigEndian.PutUint32(msg[:], uint32(i))
		if _, err := c.Write(msg[:]); err != nil {
			t.Fatal(err)
		}
		timeout := time.NewTimer(30 * time.Millisecond)
	wait:
		for {
			select {
			case id := <-back:
				if id == uint32(i) {
					break wait
				}
			case <-timeout.C:
				break wait
			}
		}
		timeout.Stop()
	}
	wg.Wait()
	ratio := float64(len(seen)) / n
	t.Logf("%d of %d came back (%.3f)", len(seen), n, ratio)
	if ratio < 0.70 || ratio > 0.80 {
		t.Fatalf("delivered %.3f, want 0.75 ± 0.05", ratio)
	}
}

// TestUDPSetCutsAndRestores: Loss 1 cuts the path, a later Set restores it.
func TestUDPSetCutsAndRestores(t *testing.T) {
	echo := udpEcho(t)
	p, c := udpProxy(t, echo.LocalAddr(), netem.Config{})
	if _, ok := pingUDP(t, c, 1); !ok {
		t.Fatal("lost before the cut")
	}
	if err := p.Set(netem.Link{Loss: 1}, netem.Link{}); err != nil {
		t.Fatal(err)
	}
	if _, ok := pingUDP(t, c, 2); ok {
		t.Fatal("came through a cut link")
	}
	if err := p.Set(netem.Link{}, netem.Link{}); err != nil {
		t.Fatal(err)
	}
	if _, ok := pingUDP(t, c, 3); !ok {
		t.Fatal("lost after the restore")
	}
	if err := p.Set(netem.Link{Loss: 2}, netem.Link{}); err == nil {
		t.Fatal("loss 2 accepted")
	}
}

func tcpEcho(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln
}

// TestTCPDelayKeepsOrder: 25 ms ± 10 ms each way gives a round trip of at
// least 30 ms, and 1 MiB echoed through jittered chunks comes back intact.
func TestTCPDelayKeepsOrder(t *testing.T) {
	echo := tcpEcho(t)
	link := netem.Link{Delay: 25 * time.Millisecond, Jitter: 10 * time.Millisecond}
	p, err := netem.ListenTCP(echo.Addr().String(), netem.Config{Up: link, Down: link})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))

	buf := make([]byte, 5)
	var rtts []time.Duration
	for range 10 {
		start := time.Now()
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
			t.Fatalf("echo %q: %v", buf, err)
		}
		rtts = append(rtts, time.Since(start))
	}
	slices.Sort(rtts)
	t.Logf("rtt min %v median %v max %v", rtts[0], rtts[len(rtts)/2], rtts[len(rtts)-1])
	if rtts[0] < 30*time.Millisecond {
		t.Errorf("min rtt %v below the injected minimum 30 ms", rtts[0])
	}
	if m := rtts[len(rtts)/2]; m > 120*time.Millisecond {
		t.Errorf("median rtt %v, want about 50 ms (at most 120 ms)", m)
	}

	data := make([]byte, 1<<20)
	rand.Read(data)
	var got []byte
	var wg sync.WaitGroup
	wg.Go(func() { got, _ = io.ReadAll(io.LimitReader(c, int64(len(data)))) })
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if !bytes.Equal(got, data) {
		t.Fatalf("echoed %d bytes differ from the %d sent", len(got), len(data))
	}
}

func TestTCPRefusesLoss(t *testing.T) {
	if _, err := netem.ListenTCP("127.0.0.1:1", netem.Config{Up: netem.Link{Loss: 0.1}}); err == nil {
		t.Fatal("loss accepted on TCP")
	}
}
