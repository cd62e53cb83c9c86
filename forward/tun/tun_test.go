//go:build linux

package tun

import (
	"bufio"
	"bytes"
	"context"
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
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/warrenvpn/warren/forward"
	"github.com/warrenvpn/warren/forward/netstack"
)

func TestMain(m *testing.M) {
	if os.Getenv(envHoldEngine) != "" {
		holdEngine() // never returns
	}
	if ip := os.Getenv(envBenchEngine); ip != "" {
		benchEngine(ip) // never returns
	}
	goleak.VerifyTestMain(m)
}

// The namespace tests run in child processes started under `ip netns exec`,
// so every thread of the engine's process is in the hub namespace.
const (
	envChild      = "WARREN_TUN_CHILD"       // set in the child: the server namespace's name
	envHoldEngine = "WARREN_TUN_HOLD_ENGINE" // set in a grandchild that starts an engine and waits to be killed
)

// The test network: hub namespace (engine, veth hv 192.168.77.1/24, default
// route via the server) and server namespace (veth sv 192.168.77.2-4/24, no
// route back to the tunnel subnet: replies reach clients only through the
// masquerade).
var (
	subnet   = netip.MustParsePrefix("10.8.0.0/24")
	hubIP    = netip.MustParseAddr("10.8.0.1")
	clientIP = netip.MustParseAddr("10.8.0.2")
	hubVeth  = netip.MustParseAddr("192.168.77.1")
	srvAddr  = netip.MustParseAddr("192.168.77.2") // allowed
	target   = netip.MustParseAddr("192.168.77.3") // forceTarget
	blocked  = netip.MustParseAddr("192.168.77.4") // block list
	elsewhen = netip.MustParseAddr("203.0.113.9")  // on no list: forced to target

	subnet6   = netip.MustParsePrefix("fd00:8::/64")
	clientIP6 = netip.MustParseAddr("fd00:8::2")
	hubVeth6  = netip.MustParseAddr("fd00:77::1")
	srvAddr6  = netip.MustParseAddr("fd00:77::2")
	blocked6  = netip.MustParseAddr("fd00:77::4")
)

const devName = "wtun0"

// needNamespaces skips unless this machine can run the namespace tests.
func needNamespaces(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, TUN devices, nftables); .ci/run runs it as root")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("no /dev/net/tun on this machine")
	}
	for _, bin := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("no %s binary (apt-get install iproute2 nftables)", bin)
		}
	}
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// namespaces makes the hub and server namespaces and removes them at cleanup.
func namespaces(t *testing.T) (hub, srv string) {
	t.Helper()
	hub = fmt.Sprintf("wtun-hub-%d", os.Getpid())
	srv = fmt.Sprintf("wtun-srv-%d", os.Getpid())
	for _, ns := range []string{hub, srv} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	run(t, "ip", "-n", hub, "link", "add", "hv", "type", "veth", "peer", "name", "sv", "netns", srv)
	run(t, "ip", "-n", hub, "addr", "add", hubVeth.String()+"/24", "dev", "hv")
	run(t, "ip", "-n", hub, "link", "set", "hv", "up")
	run(t, "ip", "-n", hub, "route", "add", "default", "via", srvAddr.String())
	for _, a := range []netip.Addr{srvAddr, target, blocked} {
		run(t, "ip", "-n", srv, "addr", "add", a.String()+"/24", "dev", "sv")
	}
	run(t, "ip", "-n", hub, "addr", "add", hubVeth6.String()+"/64", "dev", "hv", "nodad")
	run(t, "ip", "-n", hub, "-6", "route", "add", "default", "via", srvAddr6.String(), "dev", "hv")
	run(t, "ip", "-n", srv, "addr", "add", srvAddr6.String()+"/64", "dev", "sv", "nodad")
	// Deprecated, so replies of the UDP server (bound to ::) leave from srvAddr6.
	run(t, "ip", "-n", srv, "addr", "add", blocked6.String()+"/64", "dev", "sv", "nodad", "preferred_lft", "0")
	run(t, "ip", "-n", srv, "link", "set", "sv", "up")
	return hub, srv
}

// runChild runs the test named test in a child process inside namespace ns.
func runChild(t *testing.T, wrap []string, ns, srv, test string) {
	t.Helper()
	args := append(append([]string{}, wrap...), "ip", "netns", "exec", ns, os.Args[0],
		"-test.run=^"+test+"$", "-test.v", "-test.timeout=240s")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), envChild+"="+srv)
	out, err := cmd.CombinedOutput()
	t.Logf("child %s:\n%s", test, out)
	if err != nil {
		t.Fatalf("child %s failed: %v", test, err)
	}
	if !bytes.Contains(out, []byte("--- PASS: "+test)) {
		t.Fatalf("child %s did not pass", test)
	}
}

// TestEngineInNamespaces runs the engine's end-to-end checks (children
// below) as root in namespaces it creates and removes.
func TestEngineInNamespaces(t *testing.T) {
	needNamespaces(t)
	hub, srv := namespaces(t)
	for _, child := range []string{"TestChildFlowsNATAndPolicy", "TestChildDefaultBlock", "TestChildIPv6", "TestChildLeftoversReplaced", "TestChildHealthCheckRepairs", "TestChildFullTunnel", "TestChildFullTunnelLeftoversReplaced"} {
		t.Run(child, func(t *testing.T) { runChild(t, nil, hub, srv, child) })
	}
}

// TestStartWithoutNetAdmin: without CAP_NET_ADMIN, Start names the missing
// capability and suggests forwardingMode socket.
func TestStartWithoutNetAdmin(t *testing.T) {
	needNamespaces(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("no setpriv binary (util-linux)")
	}
	hub, srv := namespaces(t)
	// Dropping the capability from the bounding set before exec leaves the
	// child (uid 0 still) without it.
	runChild(t, []string{"setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin"}, hub, srv, "TestChildNoNetAdmin")
}

func TestPermErrMapsEPERM(t *testing.T) {
	err := permErr("creating TUN device x", &os.PathError{Op: "ioctl", Path: "/dev/net/tun", Err: unix.EPERM})
	if !errors.Is(err, ErrNeedNetAdmin) {
		t.Fatalf("EPERM: %v does not match ErrNeedNetAdmin", err)
	}
	for _, want := range []string{"CAP_NET_ADMIN", "forwardingMode socket", "creating TUN device x"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
	if err := permErr("x", unix.EBUSY); errors.Is(err, ErrNeedNetAdmin) {
		t.Errorf("EBUSY mapped to ErrNeedNetAdmin: %v", err)
	}
}

func TestSetElements(t *testing.T) {
	ps := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("10.1.0.0/16"), // inside the first: merged
		netip.MustParsePrefix("255.255.255.255/32"),
		netip.MustParsePrefix("2001:db8::/32"), // other family: left out
	}
	got := setElements(ps, true)
	want := []struct {
		key string
		end bool
	}{{"10.0.0.0", false}, {"11.0.0.0", true}, {"255.255.255.255", false}}
	if len(got) != len(want) {
		t.Fatalf("got %d elements %v, want %d", len(got), got, len(want))
	}
	for i, w := range want {
		a, _ := netip.AddrFromSlice(got[i].Key)
		if a.String() != w.key || got[i].IntervalEnd != w.end {
			t.Errorf("element %d = %s end=%v, want %s end=%v", i, a, got[i].IntervalEnd, w.key, w.end)
		}
	}
}

// --- children: run only under TestEngineInNamespaces ---

func childOnly(t *testing.T) string {
	t.Helper()
	srv := os.Getenv(envChild)
	if srv == "" {
		t.Skip("runs inside the namespaces TestEngineInNamespaces creates")
	}
	return srv
}

// inNetns runs fn on a thread switched into namespace name. Sockets fn
// creates stay in that namespace.
func inNetns(t testing.TB, name string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.GetFromName(name)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	fn()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: the runtime discards it with the goroutine.
		t.Fatal(err)
	}
	runtime.UnlockOSThread()
}

// accepted is one TCP connection the server namespace accepted.
type accepted struct{ local, remote netip.AddrPort }

// server is the host behind the hub: a TCP echo server and a UDP echo
// server on every address of the server namespace, one port each.
type server struct {
	port    uint16
	conns   chan accepted
	udpFrom chan netip.AddrPort
	ln      net.Listener
	pc      net.PacketConn
	wg      sync.WaitGroup
	mu      sync.Mutex
	open    []net.Conn
}

func startServer(t *testing.T, ns string) *server {
	t.Helper()
	s := &server{conns: make(chan accepted, 16), udpFrom: make(chan netip.AddrPort, 16)}
	inNetns(t, ns, func() {
		var err error
		if s.ln, err = net.Listen("tcp", ":0"); err != nil {
			t.Fatal(err)
		}
		s.port = uint16(s.ln.Addr().(*net.TCPAddr).Port)
		if s.pc, err = net.ListenPacket("udp", fmt.Sprintf(":%d", s.port)); err != nil {
			t.Fatal(err)
		}
	})
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.conns <- accepted{unmap(c.LocalAddr().(*net.TCPAddr).AddrPort()), unmap(c.RemoteAddr().(*net.TCPAddr).AddrPort())}
			s.mu.Lock()
			s.open = append(s.open, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	go func() {
		defer s.wg.Done()
		buf := make([]byte, 2048)
		for {
			n, from, err := s.pc.ReadFrom(buf)
			if err != nil {
				return
			}
			s.udpFrom <- unmap(from.(*net.UDPAddr).AddrPort())
			_, _ = s.pc.WriteTo(buf[:n], from)
		}
	}()
	t.Cleanup(func() {
		s.ln.Close()
		s.pc.Close()
		s.mu.Lock()
		for _, c := range s.open {
			c.Close() // a flow whose client went away never sees a FIN
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func unmap(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }

// client is a tunnel client: a netstack host at clientIP whose packets go
// to the engine's Send, and which receives what the engine delivers.
type client struct {
	ns      *netstack.Engine
	replies chan []byte // ICMP echo replies delivered by the engine
}

func startEngine(t *testing.T, opts Options) (*Engine, *client) {
	t.Helper()
	return startEngineOn(t, subnet, clientIP, opts)
}

// startEngineOn starts an engine on subnet (the hub its first host) and a
// client at client.
func startEngineOn(t *testing.T, subnet netip.Prefix, clientIP netip.Addr, opts Options) (*Engine, *client) {
	t.Helper()
	hubIP := subnet.Addr().Next()
	c := &client{ns: netstack.New(netstack.Options{}), replies: make(chan []byte, 16)}
	e := New(opts)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	err := e.Start(forward.Config{Subnet: subnet, HubIP: hubIP, LocalIP: hubIP, MTU: 1420, Logger: log,
		Deliver: func(bufs [][]byte, offset int) {
			for _, b := range bufs {
				b = b[offset:]
				if subnet.Addr().Is4() != (b[0]>>4 == 4) {
					t.Errorf("engine delivered an IPv%d packet on subnet %s", b[0]>>4, subnet)
					continue
				}
				dst := netip.AddrFrom16([16]byte(b[24:40]))
				if b[0]>>4 == 4 {
					dst = netip.AddrFrom4([4]byte(b[16:20]))
				}
				if dst != clientIP {
					t.Errorf("engine delivered a packet for %s", dst)
				}
				if b[0]>>4 == 4 && len(b) >= 28 && b[9] == 1 && b[20] == 0 { // ICMP echo reply
					select {
					case c.replies <- bytes.Clone(b):
					default:
					}
				}
			}
			_ = c.ns.Send(bufs, offset)
		}})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	err = c.ns.Start(forward.Config{Subnet: subnet, HubIP: hubIP, LocalIP: clientIP, MTU: 1420, Logger: log,
		Deliver: func(bufs [][]byte, offset int) {
			if err := e.Send(bufs, offset); err != nil && !errors.Is(err, net.ErrClosed) {
				t.Errorf("Send: %v", err)
			}
		}})
	if err != nil {
		e.Close()
		t.Fatalf("client netstack: %v", err)
	}
	t.Cleanup(func() {
		c.ns.Close()
		_ = e.Close()
	})
	return e, c
}

// tcpEcho dials dst from the client and echoes a message through it.
func (c *client) tcpEcho(dst netip.AddrPort, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := c.ns.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	msg := []byte("hello through the tunnel")
	if _, err := conn.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

func (c *client) udpEcho(dst netip.AddrPort, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := c.ns.DialContext(ctx, "udp", dst.String())
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	msg := []byte("datagram through the tunnel")
	got := make([]byte, 100)
	// UDP may lose the first datagram while ARP resolves: retry.
	for {
		if _, err := conn.Write(msg); err != nil {
			return err
		}
		_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := conn.Read(got)
		if err == nil {
			if !bytes.Equal(got[:n], msg) {
				return fmt.Errorf("echo %q, want %q", got[:n], msg)
			}
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
	}
}

// ping sends echo requests straight into the engine until a reply comes.
func (c *client) ping(e *Engine, dst netip.Addr, timeout time.Duration) error {
	deadline := time.After(timeout)
	for seq := uint16(1); ; seq++ {
		if err := e.Send([][]byte{echoRequest(clientIP, dst, 0x4242, seq)}, 0); err != nil {
			return err
		}
		select {
		case r := <-c.replies:
			if src := netip.AddrFrom4([4]byte(r[12:16])); src != dst {
				return fmt.Errorf("echo reply from %s, want %s", src, dst)
			}
			return nil
		case <-time.After(300 * time.Millisecond):
		case <-deadline:
			return fmt.Errorf("no echo reply from %s", dst)
		}
	}
}

func echoRequest(src, dst netip.Addr, id, seq uint16) []byte {
	pkt := make([]byte, header.IPv4MinimumSize+header.ICMPv4MinimumSize+8)
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(pkt)),
		TTL:         64,
		Protocol:    uint8(header.ICMPv4ProtocolNumber),
		SrcAddr:     tcpip.AddrFromSlice(src.AsSlice()),
		DstAddr:     tcpip.AddrFromSlice(dst.AsSlice()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	icmp := header.ICMPv4(pkt[header.IPv4MinimumSize:])
	icmp.SetType(header.ICMPv4Echo)
	icmp.SetIdent(id)
	icmp.SetSequence(seq)
	icmp.SetChecksum(^checksum.Checksum(icmp, 0))
	return pkt
}

func readForwarding(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// checkGone fails unless the device, its routes and the table are gone.
func checkGone(t *testing.T) {
	t.Helper()
	if out, err := exec.Command("nft", "list", "table", "inet", tablePrefix+devName).CombinedOutput(); err == nil {
		t.Errorf("table still there after Close:\n%s", out)
	}
	if out, err := exec.Command("ip", "link", "show", devName).CombinedOutput(); err == nil {
		t.Errorf("device still there after Close:\n%s", out)
	}
	if out := run(t, "ip", "route", "show", "table", "all"); strings.Contains(out, devName) || strings.Contains(out, subnet.String()) || strings.Contains(out, subnet6.String()) {
		t.Errorf("routes still there after Close:\n%s", out)
	}
	if out := run(t, "nft", "list", "tables"); strings.Contains(out, "warren") {
		t.Errorf("tables left:\n%s", out)
	}
}

// TestChildFlowsNATAndPolicy: TCP, UDP and ping from a client reach the
// server host with the hub's address as source and the replies come back;
// the block list drops; forceTarget DNATs; Close leaves nothing behind.
func TestChildFlowsNATAndPolicy(t *testing.T) {
	srvNS := childOnly(t)
	srv := startServer(t, srvNS)
	if got := readForwarding(t); got != "0" {
		t.Fatalf("ip_forward = %s before Start, want 0 (fresh namespace)", got)
	}
	e, c := startEngine(t, Options{
		Name: devName, NAT: true, EnableForwarding: true,
		Policy: &Policy{
			Default: ForceTarget, Target: target,
			Allow: []netip.Prefix{netip.PrefixFrom(srvAddr, 32)},
			Block: []netip.Prefix{netip.PrefixFrom(blocked, 32)},
		},
	})
	if got := readForwarding(t); got != "1" {
		t.Fatalf("ip_forward = %s after Start with EnableForwarding, want 1", got)
	}
	t.Log(run(t, "nft", "list", "table", "inet", e.Table()))

	t.Run("tcp masqueraded", func(t *testing.T) {
		if err := c.tcpEcho(netip.AddrPortFrom(srvAddr, srv.port), 20*time.Second); err != nil {
			t.Fatal(err)
		}
		a := <-srv.conns
		if a.remote.Addr() != hubVeth || a.local.Addr() != srvAddr {
			t.Fatalf("server saw %s -> %s, want %s -> %s", a.remote, a.local, hubVeth, srvAddr)
		}
	})
	t.Run("udp masqueraded", func(t *testing.T) {
		if err := c.udpEcho(netip.AddrPortFrom(srvAddr, srv.port), 20*time.Second); err != nil {
			t.Fatal(err)
		}
		if from := <-srv.udpFrom; from.Addr() != hubVeth {
			t.Fatalf("server saw UDP from %s, want %s", from, hubVeth)
		}
	})
	t.Run("ping", func(t *testing.T) {
		if err := c.ping(e, srvAddr, 20*time.Second); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("block list drops", func(t *testing.T) {
		if err := c.tcpEcho(netip.AddrPortFrom(blocked, srv.port), 3*time.Second); err == nil {
			t.Fatal("reached a blocked destination")
		}
		if err := c.ping(e, blocked, 2*time.Second); err == nil {
			t.Fatal("pinged a blocked destination")
		}
		select {
		case a := <-srv.conns:
			t.Fatalf("server accepted %s -> %s", a.remote, a.local)
		default:
		}
	})
	t.Run("forceTarget DNATs", func(t *testing.T) {
		if err := c.tcpEcho(netip.AddrPortFrom(elsewhen, srv.port), 20*time.Second); err != nil {
			t.Fatal(err)
		}
		a := <-srv.conns
		if a.local.Addr() != target || a.remote.Addr() != hubVeth {
			t.Fatalf("server saw %s -> %s, want %s -> %s", a.remote, a.local, hubVeth, target)
		}
	})

	if err := e.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := e.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
	if err := e.Send([][]byte{echoRequest(clientIP, srvAddr, 1, 1)}, 0); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Send after Close = %v, want net.ErrClosed", err)
	}
	checkGone(t)
	if got := readForwarding(t); got != "0" {
		t.Errorf("ip_forward = %s after Close, want 0 restored", got)
	}
}

// TestChildDefaultBlock: default block passes the allow list only.
func TestChildDefaultBlock(t *testing.T) {
	srvNS := childOnly(t)
	srv := startServer(t, srvNS)
	_, c := startEngine(t, Options{
		Name: devName, NAT: true, EnableForwarding: true,
		Policy: &Policy{Default: Block, Allow: []netip.Prefix{netip.PrefixFrom(srvAddr, 32)}},
		Routes: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")},
	})
	if out := run(t, "ip", "route", "show", "198.18.0.0/24"); !strings.Contains(out, "dev "+devName) {
		t.Errorf("route option not added: %q", out)
	}
	if err := c.tcpEcho(netip.AddrPortFrom(srvAddr, srv.port), 20*time.Second); err != nil {
		t.Fatalf("allow-listed destination: %v", err)
	}
	<-srv.conns
	if err := c.tcpEcho(netip.AddrPortFrom(target, srv.port), 3*time.Second); err == nil {
		t.Fatal("reached a destination on no list under default block")
	}
}

// TestChildIPv6: an IPv6 subnet, masqueraded out of the IPv6 default
// route's interface, with the block list and forwarding for IPv6.
func TestChildIPv6(t *testing.T) {
	srvNS := childOnly(t)
	srv := startServer(t, srvNS)
	fwd := "/proc/sys/net/ipv6/conf/all/forwarding"
	e, c := startEngineOn(t, subnet6, clientIP6, Options{
		Name: devName, NAT: true, EnableForwarding: true,
		Policy: &Policy{Default: Allow, Block: []netip.Prefix{netip.PrefixFrom(blocked6, 128)}},
	})
	if b, _ := os.ReadFile(fwd); strings.TrimSpace(string(b)) != "1" {
		t.Errorf("IPv6 forwarding %q after Start, want 1", b)
	}
	if err := c.tcpEcho(netip.AddrPortFrom(srvAddr6, srv.port), 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if a := <-srv.conns; a.remote.Addr() != hubVeth6 {
		t.Fatalf("server saw %s, want %s (masquerade)", a.remote, hubVeth6)
	}
	if err := c.udpEcho(netip.AddrPortFrom(srvAddr6, srv.port), 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.tcpEcho(netip.AddrPortFrom(blocked6, srv.port), 3*time.Second); err == nil {
		t.Fatal("reached a blocked IPv6 destination")
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	checkGone(t)
	if b, _ := os.ReadFile(fwd); strings.TrimSpace(string(b)) != "0" {
		t.Errorf("IPv6 forwarding %q after Close, want 0 restored", b)
	}
}

// TestChildLeftoversReplaced: after a run is SIGKILLed its table is left
// behind (and someone left a persistent device of the same name); the next
// Start replaces both and works.
func TestChildLeftoversReplaced(t *testing.T) {
	srvNS := childOnly(t)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envHoldEngine+"=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("held engine said %q, %v", line, err)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()

	table := tablePrefix + devName
	run(t, "nft", "list", "table", "inet", table) // the killed run's leftover
	run(t, "nft", "add", "chain", "inet", table, "junk")
	run(t, "ip", "tuntap", "add", "dev", devName, "mode", "tun") // persistent

	srv := startServer(t, srvNS)
	e, c := startEngine(t, Options{Name: devName, NAT: true, EnableForwarding: true, Policy: &Policy{}})
	if out := run(t, "nft", "list", "table", "inet", table); strings.Contains(out, "junk") {
		t.Errorf("leftover chain survived Start:\n%s", out)
	}
	if err := c.tcpEcho(netip.AddrPortFrom(srvAddr, srv.port), 20*time.Second); err != nil {
		t.Fatalf("after replacing leftovers: %v", err)
	}
	<-srv.conns
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	checkGone(t)
}

// holdEngine starts an engine (a full tunnel if its variable says
// "full"), says "ready" and waits to be killed.
func holdEngine() {
	opts := Options{Name: devName, NAT: true, Policy: &Policy{Default: Block}}
	if os.Getenv(envHoldEngine) == "full" {
		opts = Options{Name: devName, Routes: fullRoutes, FwMark: testMark}
	}
	e := New(opts)
	err := e.Start(forward.Config{Subnet: subnet, HubIP: hubIP, LocalIP: hubIP, MTU: 1420, Deliver: func([][]byte, int) {}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "hold engine:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	select {}
}

// TestChildHealthCheckRepairs: deleting Warren's table, or flushing a
// chain, by hand is repaired by the health check, which reports it.
func TestChildHealthCheckRepairs(t *testing.T) {
	childOnly(t)
	repaired := make(chan string, 4)
	e, _ := startEngine(t, Options{
		Name: devName, NAT: true, HealthInterval: 100 * time.Millisecond,
		Policy:   &Policy{Default: Allow, Block: []netip.Prefix{netip.PrefixFrom(blocked, 32)}},
		OnRepair: func(what string) { repaired <- what },
	})
	want := run(t, "nft", "list", "table", "inet", e.Table())
	for _, c := range []struct{ name, cmd, what string }{
		{"table deleted", "delete table inet " + e.Table(), "table inet " + e.Table() + " is missing"},
		{"chain flushed", "flush chain inet " + e.Table() + " " + chainPolicy, "chain dest_policy has 0 rules"},
		{"set flushed", "flush set inet " + e.Table() + " block", "set block has 0 elements"},
	} {
		t.Run(c.name, func(t *testing.T) {
			run(t, "nft", c.cmd)
			select {
			case what := <-repaired:
				if !strings.Contains(what, c.what) {
					t.Errorf("repair reported %q, want %q", what, c.what)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("no repair reported")
			}
			if got := run(t, "nft", "list", "table", "inet", e.Table()); got != want {
				t.Errorf("table after repair:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// TestChildNoNetAdmin runs without CAP_NET_ADMIN.
func TestChildNoNetAdmin(t *testing.T) {
	childOnly(t)
	e := New(Options{Name: devName, NAT: true})
	err := e.Start(forward.Config{Subnet: subnet, HubIP: hubIP, LocalIP: hubIP, MTU: 1420, Deliver: func([][]byte, int) {}})
	if err == nil {
		e.Close()
		t.Fatal("Start succeeded without CAP_NET_ADMIN")
	}
	t.Logf("Start: %v", err)
	if !errors.Is(err, ErrNeedNetAdmin) {
		t.Fatalf("Start error %v does not match ErrNeedNetAdmin", err)
	}
	for _, want := range []string{"CAP_NET_ADMIN", "forwardingMode socket"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
	if out, err := exec.Command("ip", "link", "show", devName).CombinedOutput(); err == nil {
		t.Errorf("a device was left:\n%s", out)
	}
}

// A full tunnel's routes and mark in the tests: table 4660.
var fullRoutes = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}

const testMark = 0x1234

// routing lists the namespace's rules and routes, both families, every
// table; but not the local routes of link-local addresses, which come when
// the kernel's duplicate address detection ends, at a time of its own.
func routing(t *testing.T) string {
	t.Helper()
	all := run(t, "ip", "-4", "rule") + run(t, "ip", "-6", "rule") +
		run(t, "ip", "-4", "route", "show", "table", "all") + run(t, "ip", "-6", "route", "show", "table", "all")
	var out strings.Builder
	for line := range strings.Lines(all) {
		if !strings.HasPrefix(line, "local fe80:") {
			out.WriteString(line)
		}
	}
	return out.String()
}

func readSysctl(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// checkFullTunnel fails unless exactly one set of the full tunnel's rules
// is there and the kernel routes as wg-quick's would: unmarked traffic
// into the device (IPv6 unreachable), marked traffic and the subnet by
// main.
func checkFullTunnel(t *testing.T) {
	t.Helper()
	for _, fam := range []string{"-4", "-6"} {
		rules := run(t, "ip", fam, "rule")
		if n := strings.Count(rules, "not from all fwmark 0x1234 lookup 4660"); n != 1 {
			t.Errorf("ip %s rule has %d not-fwmark rules, want 1:\n%s", fam, n, rules)
		}
		if n := strings.Count(rules, "lookup main suppress_prefixlength 0"); n != 1 {
			t.Errorf("ip %s rule has %d suppress rules, want 1:\n%s", fam, n, rules)
		}
	}
	// elsewhen is reached by main's default route only, which the
	// suppress rule skips; srvAddr is on hv's link, which it does not.
	if out := run(t, "ip", "route", "get", elsewhen.String()); !strings.Contains(out, "dev "+devName+" table 4660") {
		t.Errorf("unmarked route to %s: %q, want into %s by table 4660", elsewhen, out, devName)
	}
	if out := run(t, "ip", "route", "get", elsewhen.String(), "mark", "0x1234"); !strings.Contains(out, "via "+srvAddr.String()+" dev hv") {
		t.Errorf("marked route to %s: %q, want main's default out of hv", elsewhen, out)
	}
	if out := run(t, "ip", "route", "get", srvAddr.String()); !strings.Contains(out, "dev hv") || strings.Contains(out, "table") {
		t.Errorf("unmarked route to %s on the LAN: %q, want main's link route out of hv", srvAddr, out)
	}
	if out := run(t, "ip", "route", "get", clientIP.String()); !strings.Contains(out, "dev "+devName) || strings.Contains(out, "table") {
		t.Errorf("route to the subnet: %q, want main's route into %s", out, devName)
	}
	if out, err := exec.Command("ip", "-6", "route", "get", "2001:db8::1").CombinedOutput(); err == nil || !strings.Contains(string(out), "No route to host") {
		t.Errorf("unmarked IPv6 outside the tunnel: %q (%v), want unreachable", out, err)
	}
	if out := run(t, "ip", "-6", "route", "get", "2001:db8::1", "mark", "0x1234"); !strings.Contains(out, "dev hv") {
		t.Errorf("marked IPv6 route: %q, want out of hv", out)
	}
	table := run(t, "nft", "list", "table", "inet", tablePrefix+devName)
	for _, want := range []string{"meta mark 0x00001234 ct mark set meta mark", "ct mark 0x00001234 meta mark set ct mark"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if got := readSysctl(t, srcValidMark); got != "1" {
		t.Errorf("src_valid_mark = %s, want 1", got)
	}
}

// TestChildFullTunnel: default routes in Routes become wg-quick's policy
// routing, which the health check repairs when a rule or route goes
// missing, and Close puts every rule and route back as it was.
func TestChildFullTunnel(t *testing.T) {
	childOnly(t)
	before := routing(t)
	valid := readSysctl(t, srcValidMark)
	repaired := make(chan string, 4)
	e, _ := startEngine(t, Options{Name: devName, Routes: fullRoutes, FwMark: testMark,
		HealthInterval: 100 * time.Millisecond, OnRepair: func(what string) { repaired <- what }})
	t.Log(routing(t))
	checkFullTunnel(t)
	for _, c := range []struct {
		cmd  []string
		what string
	}{
		{[]string{"ip", "-4", "rule", "del", "not", "fwmark", "0x1234", "lookup", "4660"}, "IPv4 rule not fwmark 0x1234 lookup 4660 is missing"},
		{[]string{"ip", "-6", "rule", "del", "lookup", "main", "suppress_prefixlength", "0"}, "IPv6 rule lookup main suppress_prefixlength 0 is missing"},
		{[]string{"ip", "-4", "route", "del", "default", "table", "4660"}, "IPv4 default route in table 4660 is missing"},
		{[]string{"nft", "flush", "chain", "inet", tablePrefix + devName, chainMarkIn}, "chain mark_in has 0 rules, want 1"},
	} {
		run(t, c.cmd...)
		select {
		case what := <-repaired:
			if what != c.what {
				t.Errorf("after %s: repair reported %q, want %q", strings.Join(c.cmd, " "), what, c.what)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("after %s: no repair reported", strings.Join(c.cmd, " "))
		}
		checkFullTunnel(t)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	checkGone(t)
	if after := routing(t); after != before {
		t.Errorf("routing after Close:\n%s\nwant as before Start:\n%s", after, before)
	}
	if got := readSysctl(t, srcValidMark); got != valid {
		t.Errorf("src_valid_mark = %s after Close, want %s restored", got, valid)
	}
}

// TestChildFullTunnelLeftoversReplaced: a full tunnel SIGKILLed leaves its
// rules behind; the next Start replaces them (one set, not two) and Close
// restores the routing as it was before the first run. (The killed run's
// src_valid_mark stays on, as documented.)
func TestChildFullTunnelLeftoversReplaced(t *testing.T) {
	childOnly(t)
	before := routing(t)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envHoldEngine+"=full")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("held engine said %q, %v", line, err)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	if rules := run(t, "ip", "rule"); !strings.Contains(rules, "fwmark 0x1234") {
		t.Fatalf("the killed run left no rules (the test proves nothing):\n%s", rules)
	}
	e, _ := startEngine(t, Options{Name: devName, Routes: fullRoutes, FwMark: testMark})
	checkFullTunnel(t)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if after := routing(t); after != before {
		t.Errorf("routing after Close:\n%s\nwant as before the killed run:\n%s", after, before)
	}
}
