//go:build linux

package warren

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	fwdtun "github.com/warrenvpn/warren/forward/tun"
)

// envTUNChild is set in the child process TestTUNModeInNamespaces starts
// inside the hub namespace: the server namespace's name.
const envTUNChild = "WARREN_ROOT_TUN_CHILD"

// TestTUNModeInNamespaces: a hub in forwardingMode tun with enableNat, in a
// namespace of its own, and a WebSocket client: the client's TCP flow
// reaches a host in a second namespace with the hub's address as source,
// the block list holds, Server.Listen says to use the net package, and
// Close leaves no nftables table, no device and no route; a hub started
// after one was SIGKILLed replaces its leftovers; without CAP_NET_ADMIN
// Start says so.
func TestTUNModeInNamespaces(t *testing.T) {
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
	hub := fmt.Sprintf("wroot-hub-%d", os.Getpid())
	srv := fmt.Sprintf("wroot-srv-%d", os.Getpid())
	for _, ns := range []string{hub, srv} {
		ipcmd("netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		ipcmd("-n", ns, "link", "set", "lo", "up")
	}
	ipcmd("-n", hub, "link", "add", "hv", "type", "veth", "peer", "name", "sv", "netns", srv)
	ipcmd("-n", hub, "addr", "add", "192.168.77.1/24", "dev", "hv")
	ipcmd("-n", hub, "link", "set", "hv", "up")
	ipcmd("-n", hub, "route", "add", "default", "via", "192.168.77.2")
	ipcmd("-n", srv, "addr", "add", "192.168.77.2/24", "dev", "sv")
	ipcmd("-n", srv, "addr", "add", "192.168.77.4/24", "dev", "sv")
	ipcmd("-n", srv, "link", "set", "sv", "up")

	child := func(t *testing.T, wrap []string, name string) {
		args := append(append(wrap, "ip", "netns", "exec", hub, os.Args[0]), "-test.run=^"+name+"$", "-test.v", "-test.timeout=120s")
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), envTUNChild+"="+srv)
		out, err := cmd.CombinedOutput()
		t.Logf("child:\n%s", out)
		if err != nil || !bytes.Contains(out, []byte("--- PASS: "+name)) {
			t.Fatalf("child %s failed: %v", name, err)
		}
	}
	t.Run("flows", func(t *testing.T) { child(t, nil, "TestTUNModeChild") })
	t.Run("start after SIGKILL", func(t *testing.T) { child(t, nil, "TestTUNModeRestartChild") })
	t.Run("without CAP_NET_ADMIN", func(t *testing.T) {
		if _, err := exec.LookPath("setpriv"); err != nil {
			t.Skip("no setpriv binary (util-linux)")
		}
		// Dropping the capability from the bounding set before exec leaves
		// the child (uid 0 still) without it.
		child(t, []string{"setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin"}, "TestTUNModeNoNetAdminChild")
	})
}

// TestTUNModeChild runs inside the hub namespace.
func TestTUNModeChild(t *testing.T) {
	srvNS := os.Getenv(envTUNChild)
	if srvNS == "" {
		t.Skip("runs inside the namespaces TestTUNModeInNamespaces creates")
	}
	// The host behind the hub: a TCP echo server on all its addresses,
	// opened from a thread switched into its namespace.
	var ln net.Listener
	func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			t.Fatal(err)
		}
		ns, err := netns.GetFromName(srvNS)
		if err != nil {
			t.Fatal(err)
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			t.Fatal(err)
		}
		ln, err = net.Listen("tcp4", "0.0.0.0:0")
		if err := netns.Set(orig); err != nil {
			t.Fatal(err) // the thread stays locked and is discarded
		}
		orig.Close()
		runtime.UnlockOSThread()
		if err != nil {
			t.Fatal(err)
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
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

	s := newNATHub(t, func(c *ServerConfig) {
		c.ForwardingMode = ForwardTUN
		c.DestinationPolicy = &DestinationPolicy{Default: PolicyAllow, BlockList: []string{"192.168.77.4"}}
	})
	c := netClient(t, s, "alice", nil)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := c.Dial(ctx, "tcp", fmt.Sprintf("192.168.77.2:%d", port))
	if err != nil {
		t.Fatalf("dial through the TUN hub: %v", err)
	}
	msg := []byte("through the kernel")
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo %q, %v", got, err)
	}
	conn.Close()
	if from := <-remotes; from != netip.MustParseAddr("192.168.77.1") {
		t.Fatalf("server host saw %s, want the hub's 192.168.77.1 (masquerade)", from)
	}

	bctx, bcancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer bcancel()
	if conn, err := c.Dial(bctx, "tcp", fmt.Sprintf("192.168.77.4:%d", port)); err == nil {
		conn.Close()
		t.Fatal("reached a block-listed destination")
	}

	if _, err := s.Listen("tcp", ":80"); !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "net package") {
		t.Errorf("Listen in tun mode = %v, want ErrNotSupported naming the net package", err)
	}

	c.Close()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	checkTUNHubGone(t)
}

// checkTUNHubGone fails unless the hub's nftables table, its device warren0
// and every route through it or to its subnet are gone.
func checkTUNHubGone(t *testing.T) {
	t.Helper()
	if out, _ := exec.Command("nft", "list", "tables").CombinedOutput(); bytes.Contains(out, []byte("warren")) {
		t.Errorf("nftables tables left after Close:\n%s", out)
	}
	if out, err := exec.Command("ip", "link", "show", "warren0").CombinedOutput(); err == nil {
		t.Errorf("device left after Close:\n%s", out)
	}
	for _, fam := range []string{"-4", "-6"} {
		out, err := exec.Command("ip", fam, "route", "show", "table", "all").CombinedOutput()
		if err != nil {
			t.Fatalf("ip route: %v\n%s", err, out)
		}
		if bytes.Contains(out, []byte("warren0")) || bytes.Contains(out, []byte("10.8.0.")) {
			t.Errorf("routes left after Close:\n%s", out)
		}
	}
}

// envTUNHeldHub is set in the grandchild TestTUNModeRestartChild starts
// and kills.
const envTUNHeldHub = "WARREN_ROOT_TUN_HELD_HUB"

// TestTUNModeRestartChild runs inside the hub namespace: a hub in
// forwardingMode tun, started in a process that is then SIGKILLed, leaves
// its nftables table behind (and someone left a persistent device of the
// same name); a hub started afterwards replaces both, carries traffic, and
// its Close leaves nothing.
func TestTUNModeRestartChild(t *testing.T) {
	srvNS := os.Getenv(envTUNChild)
	if srvNS == "" {
		t.Skip("runs inside the namespaces TestTUNModeInNamespaces creates")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestTUNModeHeldHub$", "-test.v", "-test.timeout=120s")
	cmd.Env = append(os.Environ(), envTUNChild+"=", envTUNHeldHub+"=1")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	ready := false
	for !ready && sc.Scan() {
		t.Logf("held hub: %s", sc.Text())
		ready = sc.Text() == "held hub ready"
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	if !ready {
		t.Fatal("the held hub never said it was ready")
	}
	if out, err := exec.Command("nft", "list", "table", "inet", "warren_warren0").CombinedOutput(); err != nil {
		t.Fatalf("the killed hub left no table (the test proves nothing): %v\n%s", err, out)
	}
	for _, args := range [][]string{
		{"nft", "add", "chain", "inet", "warren_warren0", "junk"},
		{"ip", "tuntap", "add", "dev", "warren0", "mode", "tun"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	ln := listenInNamespace(t, srvNS, "tcp4", "0.0.0.0:0")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.Copy(c, c)
			c.Close()
		}
	}()
	defer func() { ln.Close(); <-done }()

	s := newNATHub(t, func(c *ServerConfig) {
		c.ForwardingMode = ForwardTUN
		c.DestinationPolicy = nil
	})
	if out, _ := exec.Command("nft", "list", "table", "inet", "warren_warren0").CombinedOutput(); bytes.Contains(out, []byte("junk")) {
		t.Errorf("the leftover table survived Start:\n%s", out)
	}
	c := netClient(t, s, "alice", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := c.Dial(ctx, "tcp", fmt.Sprintf("192.168.77.2:%d", ln.Addr().(*net.TCPAddr).Port))
	if err != nil {
		t.Fatalf("dial through the restarted hub: %v", err)
	}
	msg := []byte("after the crash")
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo %q, %v", got, err)
	}
	conn.Close()
	c.Close()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	checkTUNHubGone(t)
}

// TestTUNModeHeldHub starts a hub in forwardingMode tun, says so, and
// waits to be killed.
func TestTUNModeHeldHub(t *testing.T) {
	if os.Getenv(envTUNHeldHub) == "" {
		t.Skip("runs in the process TestTUNModeRestartChild kills")
	}
	newNATHub(t, func(c *ServerConfig) {
		c.ForwardingMode = ForwardTUN
		c.DestinationPolicy = nil
	})
	fmt.Println("held hub ready")
	select {}
}

// TestTUNModeNoNetAdminChild runs inside the hub namespace without
// CAP_NET_ADMIN: Start says which capability is missing and suggests
// forwardingMode socket.
func TestTUNModeNoNetAdminChild(t *testing.T) {
	if os.Getenv(envTUNChild) == "" {
		t.Skip("runs inside the namespaces TestTUNModeInNamespaces creates")
	}
	kp, err := GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(ServerConfig{ListenAddr: "127.0.0.1:0", PrivateKey: kp.PrivateKey,
		Subnet: netip.MustParsePrefix("10.8.0.0/24"), ForwardingMode: ForwardTUN, EnableNAT: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.Start(context.Background())
	if err == nil {
		t.Fatal("Start in forwardingMode tun succeeded without CAP_NET_ADMIN")
	}
	t.Logf("Start: %v", err)
	if !errors.Is(err, fwdtun.ErrNeedNetAdmin) {
		t.Errorf("Start's error does not match forward/tun.ErrNeedNetAdmin")
	}
	for _, want := range []string{"CAP_NET_ADMIN", "forwardingMode socket"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Start's error lacks %q", want)
		}
	}
	checkTUNHubGone(t)
}
