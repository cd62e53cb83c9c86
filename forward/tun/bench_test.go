//go:build linux

package tun

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/warrenvpn/warren/forward"
)

// envBenchEngine is set in a benchmark child: the engine's tunnel address.
// Its fd 3 is one end of a datagram socketpair, the "tunnel" to the other
// child's engine.
const envBenchEngine = "WARREN_TUN_BENCH_ENGINE"

// BenchmarkTCPThroughput moves one TCP stream between two namespaces, first
// joined by a veth pair (the baseline), then through two TUN engines whose
// Deliver and Send are joined by a datagram socketpair (as a hub's pipeline
// would join them to a client's), each engine in its own namespace and
// process. Compare the two MB/s.
func BenchmarkTCPThroughput(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (network namespaces, TUN devices)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		b.Skip("no /dev/net/tun on this machine")
	}
	seq := 0
	ns := func(name string) string {
		seq++
		n := fmt.Sprintf("wbench-%s%d-%d", name, seq, os.Getpid())
		benchRun(b, "ip", "netns", "add", n)
		b.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n).Run() })
		benchRun(b, "ip", "-n", n, "link", "set", "lo", "up")
		return n
	}
	b.Run("veth", func(b *testing.B) {
		a, z := ns("va"), ns("vz")
		benchRun(b, "ip", "-n", a, "link", "add", "va", "type", "veth", "peer", "name", "vz", "netns", z)
		benchRun(b, "ip", "-n", a, "addr", "add", "10.10.0.1/24", "dev", "va")
		benchRun(b, "ip", "-n", z, "addr", "add", "10.10.0.2/24", "dev", "vz")
		benchRun(b, "ip", "-n", a, "link", "set", "va", "up")
		benchRun(b, "ip", "-n", z, "link", "set", "vz", "up")
		tcpStream(b, a, z, "10.10.0.2")
	})
	b.Run("tun", func(b *testing.B) {
		a, z := ns("ta"), ns("tz")
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		for i, spec := range []struct{ ns, ip string }{{a, "10.9.0.1"}, {z, "10.9.0.2"}} {
			f := os.NewFile(uintptr(fds[i]), "tunnel")
			for _, opt := range []int{unix.SO_SNDBUF, unix.SO_RCVBUF} {
				_ = unix.SetsockoptInt(fds[i], unix.SOL_SOCKET, opt, 4<<20)
			}
			cmd := exec.Command("ip", "netns", "exec", spec.ns, os.Args[0])
			cmd.Env = append(os.Environ(), envBenchEngine+"="+spec.ip)
			cmd.ExtraFiles = []*os.File{f}
			cmd.Stderr = os.Stderr
			stdin, _ := cmd.StdinPipe()
			stdout, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			f.Close()
			b.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
			if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || strings.TrimSpace(line) != "ready" {
				b.Fatalf("bench engine %s: %q %v", spec.ip, line, err)
			}
		}
		tcpStream(b, a, z, "10.9.0.2")
	})
}

func benchRun(b *testing.B, args ...string) {
	b.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		b.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// tcpStream sends b.N chunks of 64 KiB from namespace from to dst:5201 in
// namespace to.
func tcpStream(b *testing.B, from, to, dst string) {
	var ln net.Listener
	var conn net.Conn
	var err error
	inNetns(b, to, func() { ln, err = net.Listen("tcp4", dst+":5201") })
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
	inNetns(b, from, func() { conn, err = net.Dial("tcp4", dst+":5201") })
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

// benchEngine runs one engine whose Deliver writes each packet to fd 3 and
// whose Send is fed by what fd 3 receives, until stdin closes.
func benchEngine(local string) {
	tunnel := os.NewFile(3, "tunnel")
	fd := int(tunnel.Fd())
	ip := netip.MustParseAddr(local)
	e := New(Options{Name: "wbench0", HealthInterval: -1})
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	err := e.Start(forward.Config{Subnet: netip.MustParsePrefix("10.9.0.0/24"), HubIP: netip.MustParseAddr("10.9.0.1"), LocalIP: ip, MTU: 1420, Logger: log,
		Deliver: func(bufs [][]byte, offset int) {
			for _, p := range bufs {
				p = p[offset:]
				if err := unix.Send(fd, p, 0); err != nil {
					log.Warn("deliver", "err", err, "len", len(p))
				}
			}
		}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench engine:", err)
		os.Exit(1)
	}
	go func() {
		bufs := make([][]byte, 128)
		store := make([][]byte, 128)
		for i := range store {
			store[i] = make([]byte, 2048)
		}
		for {
			n, err := unix.Read(fd, store[0][Offset:])
			if err != nil {
				return
			}
			bufs[0] = store[0][:Offset+n]
			k := 1
			for ; k < len(store); k++ {
				n, _, err := unix.Recvfrom(fd, store[k][Offset:], unix.MSG_DONTWAIT)
				if err != nil {
					break
				}
				bufs[k] = store[k][:Offset+n]
			}
			if err := e.Send(bufs[:k], Offset); err != nil && !errors.Is(err, net.ErrClosed) {
				log.Warn("send", "err", err)
			}
		}
	}()
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = e.Close()
	runtime.KeepAlive(tunnel) // its finalizer would close fd 3
	os.Exit(0)
}
