//go:build linux

package warren

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// Environment of BenchmarkTUNModeTCPThroughput's child processes.
const (
	envTUNBenchHub    = "WARREN_TUN_BENCH_HUB"    // the hub's: where to write the client configs
	envTUNBenchClient = "WARREN_TUN_BENCH_CLIENT" // the client's: its config file
)

// BenchmarkTUNModeTCPThroughput moves one TCP stream from namespace A to
// namespace B, first over the veth pair that joins them (the baseline),
// then through Warren's tunnel: a client in forwardingMode tun in A (its
// own process), connected over that veth pair by WebSocket or QUIC to a hub
// in forwardingMode tun in B (another process), the stream going from A's
// tunnel address to the hub's (10.8.0.1, on the hub's TUN device). Both
// kernels, both TUN devices, the session's sealing and the transport are
// on the path. Compare the MB/s.
//
//	go test -run '^$' -bench BenchmarkTUNModeTCPThroughput -benchtime 2s .
func BenchmarkTUNModeTCPThroughput(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (network namespaces, TUN devices, nftables)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		b.Skip("no /dev/net/tun on this machine")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		b.Skip("no ip binary (apt-get install iproute2)")
	}
	run := func(args ...string) {
		b.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	a := fmt.Sprintf("wtb-a-%d", os.Getpid())
	z := fmt.Sprintf("wtb-b-%d", os.Getpid())
	for _, ns := range []string{a, z} {
		run("ip", "netns", "add", ns)
		b.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		run("ip", "-n", ns, "link", "set", "lo", "up")
	}
	run("ip", "-n", a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", z)
	run("ip", "-n", a, "addr", "add", "10.99.0.1/24", "dev", "va")
	run("ip", "-n", z, "addr", "add", "10.99.0.2/24", "dev", "vb")
	run("ip", "-n", a, "link", "set", "va", "up")
	run("ip", "-n", z, "link", "set", "vb", "up")

	b.Run("veth", func(b *testing.B) { tunBenchStream(b, a, z, "10.99.0.2") })

	dir := b.TempDir()
	// child starts a test binary running test in namespace ns, waits for
	// its "ready" and returns what stops it (closing its stdin).
	child := func(ns, test string, env ...string) (stop func()) {
		b.Helper()
		cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^"+test+"$", "-test.v", "-test.timeout=600s")
		cmd.Env = append(os.Environ(), env...)
		cmd.Stderr = os.Stderr
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		stop = sync.OnceFunc(func() { stdin.Close(); _ = cmd.Wait() })
		b.Cleanup(stop)
		sc := bufio.NewScanner(stdout)
		var said strings.Builder
		for sc.Scan() {
			if sc.Text() == "ready" {
				go func() { _, _ = io.Copy(io.Discard, stdout) }()
				return stop
			}
			said.WriteString(sc.Text() + "\n")
		}
		b.Fatalf("%s did not get ready:\n%s", test, said.String())
		return nil
	}
	child(z, "TestTUNBenchHubChild", envTUNBenchHub+"="+dir)
	// One client process per transport, kept across the calls b.Run makes
	// to size b.N; it goes before the next transport's comes.
	current, stopClient := ClientTransport(""), func() {}
	for _, tr := range []ClientTransport{ClientWebSocket, ClientQUIC} {
		b.Run("tun-"+string(tr), func(b *testing.B) {
			if current != tr {
				stopClient()
				stopClient = child(a, "TestTUNBenchClientChild", envTUNBenchHub+"=", envTUNBenchClient+"="+filepath.Join(dir, string(tr)+".json"))
				current = tr
			}
			tunBenchStream(b, a, z, "10.8.0.1")
		})
	}
}

// inNamespace runs fn on a thread switched into namespace name; sockets
// fn opens stay there.
func inNamespace(tb testing.TB, name string, fn func()) {
	tb.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		tb.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.GetFromName(name)
	if err != nil {
		tb.Fatal(err)
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		tb.Fatal(err)
	}
	fn()
	if err := netns.Set(orig); err != nil {
		tb.Fatal(err) // the thread stays locked and is discarded
	}
	runtime.UnlockOSThread()
}

// tunBenchStream sends b.N chunks of 64 KiB from namespace from to
// dst:5201 in namespace to.
func tunBenchStream(b *testing.B, from, to, dst string) {
	var ln net.Listener
	var conn net.Conn
	var err error
	inNamespace(b, to, func() { ln, err = net.Listen("tcp4", dst+":5201") })
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan int64)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- 0
			return
		}
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		done <- n
	}()
	inNamespace(b, from, func() { conn, err = net.DialTimeout("tcp4", dst+":5201", 20*time.Second) })
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := conn.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	conn.Close()
	if n := <-done; n != int64(b.N*len(chunk)) {
		b.Fatalf("received %d bytes, want %d", n, b.N*len(chunk))
	}
}

// TestTUNBenchHubChild is the benchmark's hub, in namespace B: it writes a
// client config per transport, says "ready" and runs until stdin closes.
func TestTUNBenchHubChild(t *testing.T) {
	dir := os.Getenv(envTUNBenchHub)
	if dir == "" {
		t.Skip("runs in the process BenchmarkTUNModeTCPThroughput starts")
	}
	s := newNATHub(t, func(c *ServerConfig) {
		c.ListenAddr = "10.99.0.2:0"
		c.ForwardingMode = ForwardTUN
		c.TransportMode = TransportBoth
		c.EnableNAT = false // the stream ends at the hub's own address
		c.DestinationPolicy = nil
	})
	for _, tr := range []ClientTransport{ClientWebSocket, ClientQUIC} {
		bundle, err := s.CreateClient(context.Background(), ClientSpec{ClientID: string(tr), ForwardingMode: ForwardTUN})
		if err != nil {
			t.Fatal(err)
		}
		cc := bundle.Config
		cc.Transport = tr
		cc.TUNName = "wbench0"
		if err := cc.Save(filepath.Join(dir, string(tr)+".json")); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// TestTUNBenchClientChild is one benchmark client, in namespace A: it
// connects, says "ready" and runs until stdin closes.
func TestTUNBenchClientChild(t *testing.T) {
	path := os.Getenv(envTUNBenchClient)
	if path == "" {
		t.Skip("runs in the process BenchmarkTUNModeTCPThroughput starts")
	}
	cfg, err := LoadClientConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
}
