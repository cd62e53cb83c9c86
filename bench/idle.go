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

// benchIdleHeap: the hub's heap per idle session over tr with n idle
// clients (idleShort with -short). The clients run in a child process (this
// binary again, see RunSwarmIfChild), so the figure is the hub's alone:
// the live heap after they all connected, less the live heap with them all
// registered but not connected, per session (KiB/session); and less the
// heap of the hub with no client registered, per client (KiB/client: the
// registry entry too, and over WireGuard the device's peer, which exists
// from registration on). b.N is ignored: one
// measurement per run.
func benchIdleHeap(b *testing.B, tr string, n int) {
	if testing.Short() {
		n = min(n, idleShort)
	}
	s := newHub(b, hubOptions{engine: newEngine(), subnet: "10.0.0.0/8"})
	empty := liveHeap()
	cfgs := make([]warren.ClientConfig, n)
	for i := range cfgs {
		bundle := newBundle(b, s, "idle"+strconv.Itoa(i))
		cfgs[i] = clientConfig(s, bundle, tr, nil)
		cfgs[i].ForwardingMode = warren.ForwardTesting
		cfgs[i].Forwarder = nil
	}
	before := liveHeap()

	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), swarmEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()
	if err := json.NewEncoder(stdin).Encode(cfgs); err != nil {
		b.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if line != "ready\n" {
		b.Fatalf("client swarm: %q %v", line, err)
	}
	deadline := time.Now().Add(time.Minute)
	for len(s.ListClients()) < n {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d sessions at the hub after a minute", len(s.ListClients()), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	after := liveHeap()
	b.ReportMetric(float64(int64(after)-int64(before))/float64(n)/1024, "KiB/session")
	b.ReportMetric(float64(int64(after)-int64(empty))/float64(n)/1024, "KiB/client")
	b.ReportMetric(float64(n), "sessions")
}

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
