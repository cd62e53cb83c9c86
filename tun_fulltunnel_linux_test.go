//go:build linux

package warren

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Environment of the processes TestTUNFullTunnelInNamespaces starts.
const (
	envFullHub    = "WARREN_FULL_TUNNEL_HUB"    // "<internet ns>,<client ns>"
	envFullConfig = "WARREN_FULL_TUNNEL_CONFIG" // path of the client's JSON config
	envFullTarget = "WARREN_FULL_TUNNEL_TARGET" // the internet host's ip:port
)

// The internet host's address: on no network the client is on, reached by
// the hub through its default route. The hub listens on an address of its
// own that is not on the client's link either, so the client reaches it
// through its default route too: the route the full tunnel takes over.
const (
	fullInternetHost = "198.51.100.7"
	fullHubAddr      = "203.0.113.1"
)

// TestTUNFullTunnelInNamespaces: a client in forwardingMode tun with
// 0.0.0.0/0 and ::/0 routed into the tunnel (a full tunnel), over
// WebSocket, QUIC and WireGuard, in a namespace whose only way to an
// "internet" host is through the hub (its default route points at the
// hub's namespace, which has no route back for it) and whose way to the
// hub's listening address is that same default route. With the full tunnel
// on, the client's ordinary sockets reach the internet host through the
// hub (masqueraded), its own connection to the hub keeps working and can
// be made again (its sockets carry the mark), strict reverse-path
// filtering does not drop the hub's replies, and Close puts every rule and
// route back as it was.
func TestTUNFullTunnelInNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, TUN devices, nftables, policy routing); .ci/run runs it as root")
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
	hub := fmt.Sprintf("wft-hub-%d", os.Getpid())
	inet := fmt.Sprintf("wft-net-%d", os.Getpid())
	cli := fmt.Sprintf("wft-cli-%d", os.Getpid())
	for _, ns := range []string{hub, inet, cli} {
		ipcmd("netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		ipcmd("-n", ns, "link", "set", "lo", "up")
	}
	ipcmd("-n", hub, "link", "add", "hv", "type", "veth", "peer", "name", "sv", "netns", inet)
	ipcmd("-n", hub, "addr", "add", "192.168.77.1/24", "dev", "hv")
	ipcmd("-n", hub, "link", "set", "hv", "up")
	ipcmd("-n", hub, "route", "add", "default", "via", "192.168.77.2")
	ipcmd("-n", inet, "addr", "add", "192.168.77.2/24", "dev", "sv")
	ipcmd("-n", inet, "addr", "add", fullInternetHost+"/32", "dev", "sv")
	ipcmd("-n", inet, "link", "set", "sv", "up")
	ipcmd("-n", hub, "link", "add", "hc", "type", "veth", "peer", "name", "ch", "netns", cli)
	ipcmd("-n", hub, "addr", "add", tunClientHubAddr+"/24", "dev", "hc")
	ipcmd("-n", hub, "link", "set", "hc", "up")
	ipcmd("-n", hub, "addr", "add", fullHubAddr+"/32", "dev", "lo")
	ipcmd("-n", cli, "addr", "add", "192.168.88.2/24", "dev", "ch")
	ipcmd("-n", cli, "link", "set", "ch", "up")
	// The client's default route is the hub's namespace, as a home router
	// would be; the internet host has no route back to 192.168.88.0/24.
	ipcmd("-n", cli, "route", "add", "default", "via", tunClientHubAddr)
	for _, k := range []string{"net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf.ch.rp_filter=1"} {
		if out, err := exec.Command("ip", "netns", "exec", cli, "sysctl", "-q", "-w", k).CombinedOutput(); err != nil {
			t.Fatalf("sysctl %s: %v\n%s", k, err, out)
		}
	}

	cmd := exec.Command("ip", "netns", "exec", hub, os.Args[0], "-test.run=^TestTUNFullTunnelHub$", "-test.v", "-test.timeout=240s")
	cmd.Env = append(os.Environ(), envFullHub+"="+inet+","+cli)
	out, err := cmd.CombinedOutput()
	t.Logf("hub process:\n%s", out)
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestTUNFullTunnelHub")) {
		t.Fatalf("hub process failed: %v", err)
	}
}

// TestTUNFullTunnelHub runs inside the hub namespace.
func TestTUNFullTunnelHub(t *testing.T) {
	env := os.Getenv(envFullHub)
	if env == "" {
		t.Skip("runs inside the namespaces TestTUNFullTunnelInNamespaces creates")
	}
	inetNS, cliNS, _ := strings.Cut(env, ",")

	// The internet host: it says which address it sees the connection
	// from, then echoes.
	ln := listenInNamespace(t, inetNS, "tcp4", fullInternetHost+":0")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s\n", c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr())
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
		c.ListenAddr = fullHubAddr + ":0"
		c.ForwardingMode = ForwardTUN
		c.TUNName = "whub0"
		c.WGPrivateKey = wgKey.PrivateKey
		c.DestinationPolicy = nil
	})
	defaults := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	for _, tr := range []ClientTransport{ClientWebSocket, ClientQUIC, ClientWireGuard} {
		b, err := s.CreateClient(context.Background(), ClientSpec{ClientID: "c-" + string(tr), ForwardingMode: ForwardTUN})
		if err != nil {
			t.Fatal(err)
		}
		cc := b.Config
		cc.Transport = tr
		cc.TUNName = "wfull0"
		if tr == ClientWebSocket {
			// One client checks its rules often: the client process
			// removes some and waits for the repair.
			cc.TUNHealthCheckMs = 200
		}
		if tr == ClientWireGuard {
			// The default routes first: the tunnel's subnet is still the
			// hub's, not 0.0.0.0/0.
			cc.WGAllowedIPs = append(slices.Clone(defaults), cc.WGAllowedIPs...)
		} else {
			cc.TUNRoutes = defaults
		}
		path := filepath.Join(t.TempDir(), "client.json")
		if err := cc.Save(path); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("ip", "netns", "exec", cliNS, os.Args[0], "-test.run=^TestTUNFullTunnelClient$", "-test.v", "-test.timeout=120s")
		cmd.Env = append(os.Environ(), envFullHub+"=", envFullConfig+"="+path, envFullTarget+"="+ln.Addr().String())
		out, err := cmd.CombinedOutput()
		t.Logf("client process (%s):\n%s", tr, out)
		if err != nil || !bytes.Contains(out, []byte("--- PASS: TestTUNFullTunnelClient")) {
			t.Fatalf("client process (%s) failed: %v", tr, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// fullRouting lists the namespace's rules and routes, both families, every
// table, but for the local routes of link-local addresses (they appear
// when duplicate address detection ends, at a time of the kernel's own).
func fullRouting(t *testing.T) string {
	t.Helper()
	var all strings.Builder
	for _, args := range [][]string{{"-4", "rule"}, {"-6", "rule"}, {"-4", "route", "show", "table", "all"}, {"-6", "route", "show", "table", "all"}} {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		for line := range strings.Lines(string(out)) {
			if !strings.HasPrefix(line, "local fe80:") {
				all.WriteString(line)
			}
		}
	}
	return all.String()
}

// TestTUNFullTunnelClient runs inside the client namespace.
func TestTUNFullTunnelClient(t *testing.T) {
	path := os.Getenv(envFullConfig)
	if path == "" {
		t.Skip("runs inside the namespaces TestTUNFullTunnelInNamespaces creates")
	}
	target := os.Getenv(envFullTarget)
	host, _, _ := net.SplitHostPort(target)
	cfg, err := LoadClientConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	before := fullRouting(t)

	// Without the tunnel the internet host is out of reach: the hub's
	// namespace forwards the SYN, but nothing routes the answer back.
	if conn, err := net.DialTimeout("tcp", target, 2*time.Second); err == nil {
		conn.Close()
		t.Fatalf("reached %s without the tunnel: the test proves nothing", target)
	}

	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := c.Connect(ctx)
	if err != nil {
		t.Fatalf("Connect with a full tunnel: %v", err)
	}
	local := info.AssignedIP.Addr()
	t.Logf("connected over %s as %s; routing:\n%s", info.Transport, info.AssignedIP, fullRouting(t))

	for _, fam := range []string{"-4", "-6"} {
		out, _ := exec.Command("ip", fam, "rule").CombinedOutput()
		for _, want := range []string{"not from all fwmark 0x5752 lookup 22354", "lookup main suppress_prefixlength 0"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("ip %s rule lacks %q:\n%s", fam, want, out)
			}
		}
	}
	if out, _ := exec.Command("ip", "route", "get", host).CombinedOutput(); !strings.Contains(string(out), "dev "+cfg.TUNName) {
		t.Errorf("route to the internet host: %s, want into %s", out, cfg.TUNName)
	}

	// echo dials the internet host with an ordinary socket: the kernel
	// routes it into the tunnel, the hub masquerades it.
	echo := func(what string) {
		t.Helper()
		conn, err := net.DialTimeout("tcp", target, 20*time.Second)
		if err != nil {
			t.Fatalf("%s: net.Dial %s through the full tunnel: %v", what, target, err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		if from := conn.LocalAddr().(*net.TCPAddr).AddrPort().Addr(); from != local {
			t.Errorf("%s: connection from %s, want the tunnel address %s", what, from, local)
		}
		r := bufio.NewReader(conn)
		seen, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if seen = strings.TrimSpace(seen); seen != "192.168.77.1" {
			t.Errorf("%s: the internet host saw %s, want the hub's 192.168.77.1 (masquerade)", what, seen)
		}
		msg := []byte("all of it through the hub")
		if _, err := conn.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("%s: echo %q, %v", what, got, err)
		}
		if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
			t.Fatalf("%s: after CloseWrite: %q, %v; want the host's FIN", what, rest, err)
		}
	}
	echo("first session")
	if err := pingOnce(host, 20*time.Second); err != nil {
		t.Errorf("ping %s through the full tunnel: %v", host, err)
	}
	if cfg.TUNHealthCheckMs != 0 {
		checkFullTunnelRepairs(t, c, cfg.TUNName)
		echo("after the repairs")
	}
	if st := c.Status(); st != StatusConnected {
		t.Fatalf("status %s after traffic through the full tunnel, want connected", st)
	}

	// A new connection to the hub, made while the full tunnel routes
	// everything, must leave outside it: its socket carries the mark.
	if err := c.Disconnect(); err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
	if _, err := c.Connect(ctx); err != nil {
		t.Fatalf("Connect again under the full tunnel: %v", err)
	}
	echo("second session")

	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := net.InterfaceByName(cfg.TUNName); err == nil {
		t.Errorf("device %s left after Close", cfg.TUNName)
	}
	if out, _ := exec.Command("nft", "list", "tables").CombinedOutput(); bytes.Contains(out, []byte("warren")) {
		t.Errorf("nftables tables left after Close:\n%s", out)
	}
	if after := fullRouting(t); after != before {
		t.Errorf("routing after Close:\n%s\nwant as before Connect:\n%s", after, before)
	}
}

// checkFullTunnelRepairs removes a policy rule and then the nftables table
// of c's full tunnel by hand, and checks that the client's health check
// (tunHealthCheckMs, much shorter than the default 60 s) puts each back and
// reports it with an Error event.
func checkFullTunnelRepairs(t *testing.T, c *Client, dev string) {
	t.Helper()
	events, unsub := c.Subscribe()
	defer unsub()
	for _, tc := range []struct {
		cmd  []string
		what string
	}{
		{[]string{"ip", "-4", "rule", "del", "not", "fwmark", "0x5752", "lookup", "22354"}, "IPv4 rule not fwmark 0x5752 lookup 22354 is missing"},
		{[]string{"nft", "delete", "table", "inet", "warren_" + dev}, "table inet warren_" + dev + " is missing"},
	} {
		if out, err := exec.Command(tc.cmd[0], tc.cmd[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(tc.cmd, " "), err, out)
		}
		// Far below the default interval, far above 200 ms on a loaded machine.
		timeout := time.After(20 * time.Second)
	wait:
		for {
			select {
			case e := <-events:
				if ev, ok := e.(Error); ok && strings.Contains(ev.Err.Error(), "re-applied") {
					if !strings.Contains(ev.Err.Error(), tc.what) {
						t.Fatalf("after %s: event %q, want it to say %q", strings.Join(tc.cmd, " "), ev.Err, tc.what)
					}
					t.Logf("after %s: %v", strings.Join(tc.cmd, " "), ev.Err)
					break wait
				}
			case <-timeout:
				t.Fatalf("after %s: no repair event within 20 s", strings.Join(tc.cmd, " "))
			}
		}
	}
	out, _ := exec.Command("ip", "-4", "rule").CombinedOutput()
	if !strings.Contains(string(out), "not from all fwmark 0x5752 lookup 22354") {
		t.Errorf("ip -4 rule after the repair:\n%s", out)
	}
	if out, err := exec.Command("nft", "list", "table", "inet", "warren_"+dev).CombinedOutput(); err != nil {
		t.Errorf("nftables table after the repair: %v\n%s", err, out)
	}
}
