//go:build linux

package warren

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// Environment of the processes TestTUNClientModeInNamespaces starts: the hub
// process gets the server and client namespaces' names, the client process
// its config file and the server host's TCP address.
const (
	envTUNClientHub    = "WARREN_TUN_CLIENT_HUB"    // "<server ns>,<client ns>"
	envTUNClientConfig = "WARREN_TUN_CLIENT_CONFIG" // path of the client's JSON config
	envTUNClientTarget = "WARREN_TUN_CLIENT_TARGET" // the server host's ip:port
)

// The three namespaces' addresses: the hub is 192.168.77.1 toward the server
// host (192.168.77.2, its default route) and 192.168.88.1 toward the client
// (192.168.88.2), which has no route to 192.168.77.0/24 but the tunnel.
const (
	tunClientHubAddr = "192.168.88.1"
	tunClientServer  = "192.168.77.2"
)

// TestTUNClientModeInNamespaces: a hub in forwardingMode tun with enableNat
// in one namespace, a server host behind it in a second, and clients in
// forwardingMode tun connecting over WebSocket and over WireGuard from a
// third. The client's
// ordinary sockets (a raw ICMP socket, net.Dial) reach the server host
// through the client's TUN device and the hub, the server host sees the
// hub's address as source (masquerade), the client's Dial and Listen say to
// use the net package, the hub's tunName and tunHealthCheckMs reach the
// engine (a deleted table is re-applied with an event), and both Closes
// leave no device and no table behind.
func TestTUNClientModeInNamespaces(t *testing.T) {
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
	ipcmd := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	hub := fmt.Sprintf("wtc-hub-%d", os.Getpid())
	srv := fmt.Sprintf("wtc-srv-%d", os.Getpid())
	cli := fmt.Sprintf("wtc-cli-%d", os.Getpid())
	for _, ns := range []string{hub, srv, cli} {
		ipcmd("netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		ipcmd("-n", ns, "link", "set", "lo", "up")
	}
	ipcmd("-n", hub, "link", "add", "hv", "type", "veth", "peer", "name", "sv", "netns", srv)
	ipcmd("-n", hub, "addr", "add", "192.168.77.1/24", "dev", "hv")
	ipcmd("-n", hub, "link", "set", "hv", "up")
	ipcmd("-n", hub, "route", "add", "default", "via", tunClientServer)
	ipcmd("-n", srv, "addr", "add", tunClientServer+"/24", "dev", "sv")
	ipcmd("-n", srv, "link", "set", "sv", "up")
	ipcmd("-n", hub, "link", "add", "hc", "type", "veth", "peer", "name", "ch", "netns", cli)
	ipcmd("-n", hub, "addr", "add", tunClientHubAddr+"/24", "dev", "hc")
	ipcmd("-n", hub, "link", "set", "hc", "up")
	ipcmd("-n", cli, "addr", "add", "192.168.88.2/24", "dev", "ch")
	ipcmd("-n", cli, "link", "set", "ch", "up")

	cmd := exec.Command("ip", "netns", "exec", hub, os.Args[0], "-test.run=^TestTUNClientModeHub$", "-test.v", "-test.timeout=180s")
	cmd.Env = append(os.Environ(), envTUNClientHub+"="+srv+","+cli)
	out, err := cmd.CombinedOutput()
	t.Logf("hub process:\n%s", out)
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestTUNClientModeHub")) {
		t.Fatalf("hub process failed: %v", err)
	}
}

// TestTUNClientModeHub runs inside the hub namespace.
func TestTUNClientModeHub(t *testing.T) {
	env := os.Getenv(envTUNClientHub)
	if env == "" {
		t.Skip("runs inside the namespaces TestTUNClientModeInNamespaces creates")
	}
	srvNS, cliNS, _ := strings.Cut(env, ",")

	// The host behind the hub: a TCP echo server, opened from a thread
	// switched into its namespace.
	ln := listenInNamespace(t, srvNS, "tcp4", tunClientServer+":0")
	remotes := make(chan netip.Addr, 4)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			remotes <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
			_, _ = io.Copy(c, c)
			c.Close()
		}
	}()
	defer func() { ln.Close(); <-done }()

	wgKey, err := GenerateWGKeypair()
	if err != nil {
		t.Fatal(err)
	}
	s := newNATHub(t, func(c *ServerConfig) {
		c.ListenAddr = tunClientHubAddr + ":0"
		c.ForwardingMode = ForwardTUN
		c.TUNName = "whub0"
		c.TUNHealthCheckMs = 200
		c.WGPrivateKey = wgKey.PrivateKey
		c.DestinationPolicy = nil
	})
	events, unsubscribe := s.Subscribe()
	defer unsubscribe()
	if out, err := exec.Command("nft", "list", "table", "inet", "warren_whub0").CombinedOutput(); err != nil {
		t.Fatalf("the hub's table warren_whub0 (tunName whub0): %v\n%s", err, out)
	}
	if out, err := exec.Command("ip", "link", "show", "whub0").CombinedOutput(); err != nil {
		t.Fatalf("the hub's device whub0: %v\n%s", err, out)
	}

	// alice comes over WebSocket and routes the server's network with
	// tunRoutes; bob over WireGuard, with it in wgAllowedIps.
	server := netip.MustParsePrefix("192.168.77.0/24")
	for _, tc := range []struct {
		id, dev   string
		transport ClientTransport
	}{
		{"alice", "wcli0", ClientWebSocket},
		{"bob", "wcli1", ClientWireGuard},
	} {
		b, err := s.CreateClient(context.Background(), ClientSpec{ClientID: tc.id, ForwardingMode: ForwardTUN})
		if err != nil {
			t.Fatal(err)
		}
		if b.Config.ForwardingMode != ForwardTUN {
			t.Fatalf("bundle forwarding mode %q, want tun", b.Config.ForwardingMode)
		}
		cc := b.Config
		cc.Transport = tc.transport
		cc.TUNName = tc.dev
		if tc.transport == ClientWireGuard {
			cc.WGAllowedIPs = append(cc.WGAllowedIPs, server)
		} else {
			cc.TUNRoutes = []netip.Prefix{server}
		}
		path := filepath.Join(t.TempDir(), "client.json")
		if err := cc.Save(path); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("ip", "netns", "exec", cliNS, os.Args[0], "-test.run=^TestTUNClientModeClient$", "-test.v", "-test.timeout=120s")
		cmd.Env = append(os.Environ(), envTUNClientHub+"=", envTUNClientConfig+"="+path,
			envTUNClientTarget+"="+ln.Addr().String())
		out, err := cmd.CombinedOutput()
		t.Logf("client process (%s, %s):\n%s", tc.id, tc.transport, out)
		if err != nil || !bytes.Contains(out, []byte("--- PASS: TestTUNClientModeClient")) {
			t.Fatalf("client process (%s) failed: %v", tc.transport, err)
		}
		select {
		case from := <-remotes:
			if from != netip.MustParseAddr("192.168.77.1") {
				t.Fatalf("server host saw %s, want the hub's 192.168.77.1 (masquerade)", from)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the server host accepted no connection")
		}
	}

	// tunHealthCheckMs reached the engine: a table deleted by hand is back
	// within a few intervals, with an event.
	if out, err := exec.Command("nft", "delete", "table", "inet", "warren_whub0").CombinedOutput(); err != nil {
		t.Fatalf("nft delete table: %v\n%s", err, out)
	}
	deadline := time.After(20 * time.Second)
	for repaired := false; !repaired; {
		select {
		case ev := <-events:
			if e, ok := ev.(Error); ok && strings.Contains(e.Err.Error(), "re-applied") {
				repaired = true
			}
		case <-deadline:
			t.Fatal("no re-applied event within 20 s of deleting the table (tunHealthCheckMs 200)")
		}
	}
	if out, err := exec.Command("nft", "list", "table", "inet", "warren_whub0").CombinedOutput(); err != nil {
		t.Fatalf("table not back after the repair event: %v\n%s", err, out)
	}

	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if out, _ := exec.Command("nft", "list", "tables").CombinedOutput(); bytes.Contains(out, []byte("warren")) {
		t.Errorf("nftables tables left after Close:\n%s", out)
	}
	if out, err := exec.Command("ip", "link", "show", "whub0").CombinedOutput(); err == nil {
		t.Errorf("device left after Close:\n%s", out)
	}
}

// TestTUNClientModeClient runs inside the client namespace.
func TestTUNClientModeClient(t *testing.T) {
	path := os.Getenv(envTUNClientConfig)
	if path == "" {
		t.Skip("runs inside the namespaces TestTUNClientModeInNamespaces creates")
	}
	target := os.Getenv(envTUNClientTarget)
	cfg, err := LoadClientConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	info, err := c.Connect(ctx)
	if err != nil {
		t.Fatalf("Connect in forwardingMode tun: %v", err)
	}
	local := info.AssignedIP.Addr()

	dev := cfg.TUNName
	ifc, err := net.InterfaceByName(dev)
	if err != nil {
		t.Fatalf("the client's device %s: %v", dev, err)
	}
	addrs, _ := ifc.Addrs()
	if len(addrs) == 0 || !strings.HasPrefix(addrs[0].String(), local.String()+"/") {
		t.Fatalf("%s has addresses %v, want %s", dev, addrs, info.AssignedIP)
	}

	if _, err := c.Dial(ctx, "tcp", target); !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "net package") {
		t.Errorf("Dial in tun mode = %v, want ErrNotSupported naming the net package", err)
	}
	if _, err := c.Listen("tcp", ":80"); !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "net package") {
		t.Errorf("Listen in tun mode = %v, want ErrNotSupported naming the net package", err)
	}

	// Ping the server host with an ordinary raw ICMP socket.
	host, _, _ := net.SplitHostPort(target)
	if err := pingOnce(host, 20*time.Second); err != nil {
		t.Fatalf("ping %s through the tunnel: %v", host, err)
	}

	// TCP with net.Dial: the kernel routes it into the device, from the
	// tunnel address.
	conn, err := net.DialTimeout("tcp", target, 20*time.Second)
	if err != nil {
		t.Fatalf("net.Dial %s through the tunnel: %v", target, err)
	}
	if from := conn.LocalAddr().(*net.TCPAddr).AddrPort().Addr(); from != local {
		t.Errorf("connection from %s, want the tunnel address %s", from, local)
	}
	msg := []byte("through two kernels")
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo %q, %v", got, err)
	}
	// Close both ways through the tunnel before it goes: the server host's
	// end must not wait for a FIN that never came.
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(conn); err != nil || len(rest) != 0 {
		t.Fatalf("after CloseWrite: %q, %v; want the server host's FIN", rest, err)
	}
	conn.Close()

	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := net.InterfaceByName(dev); err == nil {
		t.Errorf("device %s left after Close", dev)
	}
	if out, _ := exec.Command("nft", "list", "tables").CombinedOutput(); bytes.Contains(out, []byte("warren")) {
		t.Errorf("nftables tables left after Close:\n%s", out)
	}
}

// listenInNamespace opens a listener inside the named network namespace
// from a thread switched into it; the socket stays there.
func listenInNamespace(t *testing.T, name, network, addr string) net.Listener {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		t.Fatal(err)
	}
	ln, lerr := net.Listen(network, addr)
	if err := netns.Set(orig); err != nil {
		t.Fatal(err) // the thread stays locked and is discarded
	}
	runtime.UnlockOSThread()
	if lerr != nil {
		t.Fatal(lerr)
	}
	return ln
}

// pingOnce sends ICMP echo requests to host over a raw socket, one a
// second, until a reply comes or timeout passes.
func pingOnce(host string, timeout time.Duration) error {
	pc, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return err
	}
	defer pc.Close()
	dst := &net.IPAddr{IP: net.ParseIP(host)}
	id := uint16(os.Getpid())
	end := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	for seq := uint16(1); time.Now().Before(end); seq++ {
		req := []byte{8, 0, 0, 0, 0, 0, 0, 0, 'w', 'a', 'r', 'r', 'e', 'n'}
		binary.BigEndian.PutUint16(req[4:], id)
		binary.BigEndian.PutUint16(req[6:], seq)
		binary.BigEndian.PutUint16(req[2:], icmpChecksum(req))
		if _, err := pc.WriteTo(req, dst); err != nil {
			return err
		}
		_ = pc.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				break // a second without the reply: send again
			}
			if n >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[4:]) == id && from.(*net.IPAddr).IP.Equal(dst.IP) {
				return nil
			}
		}
	}
	return fmt.Errorf("no echo reply within %v", timeout)
}

// icmpChecksum is the Internet checksum of b (RFC 1071).
func icmpChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
