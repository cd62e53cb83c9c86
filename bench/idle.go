package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenvpn/warren"
	fwdtesting "github.com/warrenvpn/warren/forward/testing"
)

// swarmEnv, set in a process's environment, makes RunSwarmIfChild run the
// client swarm of an IdleHeap case in that process.
const swarmEnv = "WARREN_BENCH_SWARM"

// swarmParallel bounds the connects the swarm runs at once.
const swarmParallel = 16

// RunSwarmIfChild runs the client side of an IdleHeap case and exits, when
// the process was started as that side; otherwise it returns at once. Call
// it first in TestMain and in main: the IdleHeap case re-executes the
// running binary so the clients' heap is not counted as the hub's.
func RunSwarmIfChild() {
	if os.Getenv(swarmEnv) != "1" {
		return
	}
	if err := runSwarm(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stdout, "error:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// runSwarm reads client configs as JSON from in, connects them all, writes
// "ready" to out, and holds the sessions until in reaches EOF.
func runSwarm(in io.Reader, out io.Writer) error {
	var cfgs []warren.ClientConfig
	dec := json.NewDecoder(in)
	if err := dec.Decode(&cfgs); err != nil {
		return fmt.Errorf("bench: swarm: reading configs: %w", err)
	}
	clients := make([]*warren.Client, len(cfgs))
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		sem   = make(chan struct{}, swarmParallel)
	)
	for i, cfg := range cfgs {
		cfg.Forwarder = fwdtesting.New(fwdtesting.Options{Buffer: 1})
		c, err := warren.NewClient(cfg)
		if err != nil {
			return err
		}
		clients[i] = c
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if _, err := c.Connect(ctx); err != nil {
				mu.Lock()
				first = errors.Join(first, fmt.Errorf("client %d: %w", i, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	fmt.Fprintln(out, "ready")
	_, err := io.Copy(io.Discard, in)
	return err
}

// idleShort is the idle client count of -short runs.
const idleShort = 50

// idleFigures is what measureIdleHeap finds, in KiB per client.
type idleFigures struct {
	// Session is the heap a connected idle session adds to its client's
	// registry entry: over WireGuard the client's peer on the hub's device
	// and the session state (after - registered); over WebSocket and QUIC
	// the session alone (after - enabled), since every enabled client is a
	// peer of the hub's WireGuard device whichever transport it uses.
	Session float64
	// Peer is the heap of an enabled client's WireGuard peer before it
	// connects (enabled - registered).
	Peer float64
	// Client is all the hub holds for a connected idle client: registry
	// entry, WireGuard peer and session (after - empty).
	Client float64
	// Goroutines is the hub's goroutines per session, over WireGuard
	// counting the peer's (after - registered, or after - enabled).
	Goroutines float64
}

// benchIdleHeap: the hub's heap per idle session over tr with n idle
// clients (idleShort with -short); see measureIdleHeap. b.N is ignored: one
// measurement per run.
func benchIdleHeap(b *testing.B, tr string, n int) {
	if testing.Short() {
		n = min(n, idleShort)
	}
	f := measureIdleHeap(b, tr, n)
	b.ReportMetric(f.Session, "KiB/session")
	b.ReportMetric(f.Peer, "KiB/peer")
	b.ReportMetric(f.Client, "KiB/client")
	b.ReportMetric(f.Goroutines, "goroutines/session")
	b.ReportMetric(float64(n), "sessions")
}

// measureIdleHeap measures the live heap of a hub at four points: empty
// (no client); registered (n clients registered and disabled, so their
// registry entries only); enabled (the same clients enabled, so each is
// also a peer of the hub's WireGuard device); after (every client connected
// over tr and idle). The clients run in a child process (this binary again,
// see RunSwarmIfChild), so the figures are the hub's alone. It first waits
// until the hubs and clients of earlier cases are collected: a session
// that ended keeps its connection, and with it its hub, reachable for a
// couple of seconds (a close timer), and their release in the middle of
// the measurement made it come out negative.
func measureIdleHeap(tb testing.TB, tr string, n int) idleFigures {
	waitReleased(tb)
	s := newHub(tb, hubOptions{engine: newEngine(), subnet: "10.0.0.0/8"})
	ctx := context.Background()
	empty := settledHeap()
	cfgs := make([]warren.ClientConfig, n)
	for i := range cfgs {
		id := "idle" + strconv.Itoa(i)
		bundle := newBundle(tb, s, id)
		cfgs[i] = clientConfig(s, bundle, tr, nil)
		cfgs[i].ForwardingMode = warren.ForwardTesting
		cfgs[i].Forwarder = nil
		if err := s.DisableClient(ctx, id); err != nil {
			tb.Fatal(err)
		}
	}
	registered, routinesRegistered := settledHeap(), runtime.NumGoroutine()
	for i := range cfgs {
		if err := s.EnableClient(ctx, "idle"+strconv.Itoa(i)); err != nil {
			tb.Fatal(err)
		}
	}
	enabled, routinesEnabled := settledHeap(), runtime.NumGoroutine()

	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), swarmEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()
	if err := json.NewEncoder(stdin).Encode(cfgs); err != nil {
		tb.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if line != "ready\n" {
		tb.Fatalf("client swarm: %q %v", line, err)
	}
	deadline := time.Now().Add(time.Minute)
	for len(s.ListClients()) < n {
		if time.Now().After(deadline) {
			tb.Fatalf("%d of %d sessions at the hub after a minute", len(s.ListClients()), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	after, routinesAfter := settledHeap(), runtime.NumGoroutine()
	// The configs are live at every reading but the first; keep them so
	// through the last.
	runtime.KeepAlive(cfgs)

	perClient := func(from, to uint64) float64 { return float64(int64(to)-int64(from)) / float64(n) / 1024 }
	f := idleFigures{
		Session:    perClient(enabled, after),
		Peer:       perClient(registered, enabled),
		Client:     perClient(empty, after),
		Goroutines: float64(routinesAfter-routinesEnabled) / float64(n),
	}
	if tr == "wireguard" {
		f.Session = perClient(registered, after)
		f.Goroutines = float64(routinesAfter-routinesRegistered) / float64(n)
	}
	return f
}

// released counts the hubs and clients the suite made that may still be
// reachable: track adds one, and the garbage collector takes it off when
// the object is unreachable.
var released atomic.Int64

// track counts p in released until it is collected.
func track[T any](p *T) {
	released.Add(1)
	runtime.AddCleanup(p, func(struct{}) { released.Add(-1) }, struct{}{})
}

// releaseTimeout bounds waitReleased.
const releaseTimeout = 30 * time.Second

// waitReleased collects garbage until every hub and client made so far
// (track) is gone, so that none is freed while an IdleHeap case measures,
// and fails tb if one is still reachable after releaseTimeout (a leak).
func waitReleased(tb testing.TB) {
	tb.Helper()
	deadline := time.Now().Add(releaseTimeout)
	for {
		runtime.GC()
		if released.Load() == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d hubs or clients of earlier cases still reachable %v after they were closed", released.Load(), releaseTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Settling: settledHeap reads the live heap every settleEvery until two
// readings in a row are within settleSlack of the one before, for at most
// settleMax. A hub's goroutines take their buffers when they first run
// (wireguard-go's receive batches, for one), which may be after Start
// returned.
const (
	settleEvery = 100 * time.Millisecond
	settleSlack = 64 << 10
	settleMax   = 10 * time.Second
)

// settledHeap is the live heap once it has stopped moving (see settleEvery),
// or the last reading after settleMax.
func settledHeap() uint64 {
	deadline := time.Now().Add(settleMax)
	h, still := liveHeap(), 0
	for still < 2 && time.Now().Before(deadline) {
		time.Sleep(settleEvery)
		next := liveHeap()
		if max(next, h)-min(next, h) <= settleSlack {
			still++
		} else {
			still = 0
		}
		h = next
	}
	return h
}

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
