//go:build linux

package warren

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
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

	"github.com/warrenvpn/warren/wgconfig"
)

// TestStockWireGuardGoInterop proves WireGuard interop with an implementation
// Warren did not write: Debian's wireguard-go daemon and wg(8), configured
// only from the hub's exported .conf, run in a network namespace that reaches
// the hub over a veth pair. It needs root, /dev/net/tun and the Debian
// packages wireguard-go, wireguard-tools, iproute2 and iputils-ping.
func TestStockWireGuardGoInterop(t *testing.T) {
	tools := interopRequire(t)

	pid := os.Getpid()
	nsName := fmt.Sprintf("warren-wg-%d", pid)
	hostIf := fmt.Sprintf("wwg%dh", pid) // at most 11 bytes: pids are < 2^22
	peerIf := fmt.Sprintf("wwg%dp", pid)
	wgIf := fmt.Sprintf("wwg%d", pid) // unique: wireguard-go's UAPI socket lives in the shared /var/run/wireguard
	hostIP, peerIP := interopVethAddrs(t, tools, pid)

	// 1. The hub: WireGuard plus the userspace NAT, whose netstack answers
	// ICMP echo and serves Server.Listen on 10.77.0.1. PublicEndpoint is the
	// host end of the veth; the .conf takes its port from the running device.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	noiseKeys, err := GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	wgKeys, err := GenerateWGKeypair()
	if err != nil {
		t.Fatal(err)
	}
	subnet := netip.MustParsePrefix("10.77.0.0/24")
	srv, err := NewServer(ServerConfig{
		ListenAddr:     "127.0.0.1:0",
		PrivateKey:     noiseKeys.PrivateKey,
		WGPrivateKey:   wgKeys.PrivateKey,
		WGListenPort:   0,
		Subnet:         subnet,
		ForwardingMode: ForwardSocket,
		PublicEndpoint: hostIP.String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	wgAddr, ok := srv.WGAddr().(*net.UDPAddr)
	if !ok || wgAddr.Port == 0 {
		t.Fatalf("WGAddr() = %v, want the WireGuard UDP address", srv.WGAddr())
	}
	bundle, err := srv.CreateClient(ctx, ClientSpec{ClientID: "stock"})
	if err != nil {
		t.Fatal(err)
	}
	interopEchoServer(t, srv)

	// 2. The namespace and the veth pair, removed even when the test fails.
	ns := &interopNS{tools: tools, name: nsName}
	if out, err := tools.run(ctx, tools.ip, "netns", "add", nsName); err != nil {
		if strings.Contains(out, "ermission denied") || strings.Contains(out, "not permitted") {
			t.Skipf("cannot create a network namespace here (%s); this test needs a root that may", strings.TrimSpace(out))
		}
		t.Fatalf("ip netns add %s: %v\n%s", nsName, err, out)
	}
	t.Cleanup(func() {
		// Deleting the namespace takes the peer end of the veth (and so the
		// host end) with it; the explicit link delete covers a failure
		// between creating the pair and moving its peer end.
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		if out, err := tools.run(cctx, tools.ip, "netns", "del", nsName); err != nil {
			t.Logf("cleanup: ip netns del %s: %v %s", nsName, err, out)
		}
		if _, err := tools.run(cctx, tools.ip, "link", "show", "dev", hostIf); err == nil {
			if out, err := tools.run(cctx, tools.ip, "link", "del", "dev", hostIf); err != nil {
				t.Logf("cleanup: ip link del %s: %v %s", hostIf, err, out)
			}
		}
	})
	tools.must(t, ctx, tools.ip, "link", "add", hostIf, "type", "veth", "peer", "name", peerIf)
	tools.must(t, ctx, tools.ip, "link", "set", peerIf, "netns", nsName)
	tools.must(t, ctx, tools.ip, "addr", "add", netip.PrefixFrom(hostIP, 30).String(), "dev", hostIf)
	tools.must(t, ctx, tools.ip, "link", "set", hostIf, "up")
	tools.must(t, ctx, tools.ip, "-n", nsName, "addr", "add", netip.PrefixFrom(peerIP, 30).String(), "dev", peerIf)
	tools.must(t, ctx, tools.ip, "-n", nsName, "link", "set", peerIf, "up")
	tools.must(t, ctx, tools.ip, "-n", nsName, "link", "set", "lo", "up")

	// 3. The exported .conf, completed with the private key from the bundle
	// and stripped to what `wg setconf` reads.
	export, err := srv.ExportClientConfig(ctx, "stock", ExportWireGuard)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(export, "# PrivateKey") || strings.Contains(export, "\nPrivateKey =") {
		t.Fatalf("exported .conf should carry no private key, only a comment saying so:\n%s", export)
	}
	if !strings.HasPrefix(export, "[Interface]\n") {
		t.Fatalf("exported .conf does not start with [Interface]:\n%s", export)
	}
	full := strings.Replace(export, "[Interface]\n", "[Interface]\nPrivateKey = "+bundle.Secrets.WGPrivateKey.String()+"\n", 1)
	conf, err := wgconfig.Parse([]byte(full))
	if err != nil {
		t.Fatalf("completed .conf does not parse: %v\n%s", err, full)
	}
	if len(conf.Interface.Addresses) != 1 || conf.Interface.Addresses[0].Addr() != bundle.Entry.AssignedIP {
		t.Fatalf(".conf Address = %v, want %v", conf.Interface.Addresses, bundle.Entry.AssignedIP)
	}
	if len(conf.Peers) != 1 {
		t.Fatalf(".conf has %d peers, want the hub only:\n%s", len(conf.Peers), full)
	}
	wantEndpoint := netip.AddrPortFrom(hostIP, uint16(wgAddr.Port)).String()
	if conf.Peers[0].Endpoint != wantEndpoint {
		t.Fatalf(".conf Endpoint = %q, want %q (PublicEndpoint's host, WGAddr's port)", conf.Peers[0].Endpoint, wantEndpoint)
	}
	setconf, err := conf.StripForWG()
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"Address", "DNS", "MTU"} {
		if bytes.Contains(setconf, []byte("\n"+key+" =")) {
			t.Fatalf("StripForWG kept %s:\n%s", key, setconf)
		}
	}
	setconfFile := filepath.Join(t.TempDir(), "stock.conf")
	if err := os.WriteFile(setconfFile, setconf, 0o600); err != nil {
		t.Fatal(err)
	}

	// 4. wireguard-go in the namespace, configured by wg(8) and ip(8).
	ns.startWireGuardGo(t, wgIf)
	ns.must(t, ctx, tools.wg, "setconf", wgIf, setconfFile)
	assigned := netip.PrefixFrom(conf.Interface.Addresses[0].Addr(), subnet.Bits())
	mtu := conf.Interface.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	tools.must(t, ctx, tools.ip, "-n", nsName, "addr", "add", assigned.String(), "dev", wgIf)
	tools.must(t, ctx, tools.ip, "-n", nsName, "link", "set", wgIf, "mtu", strconv.Itoa(mtu), "up")

	// 5. Traffic: ICMP echo answered by the hub's netstack, then TCP to a
	// service the hub serves with Server.Listen.
	hub := srv.HubIP().String()
	if out, err := ns.run(ctx, tools.ping, "-c", "3", "-W", "2", hub); err != nil {
		t.Fatalf("ping %s from the namespace through wireguard-go: %v\n%s", hub, err, out)
	}
	out, err := ns.run(ctx, tools.bash, "-c", "exec 3<>/dev/tcp/"+hub+"/7000; echo hello >&3; cat <&3")
	if err != nil || out != "echo: hello\n" {
		t.Fatalf("TCP exchange with %s:7000 = %q, %v; want %q", hub, out, err, "echo: hello\n")
	}

	var info ClientInfo
	interopEventually(t, 5*time.Second, func() error {
		for _, c := range srv.ListClients() {
			if c.ClientID == "stock" {
				info = c
				return nil
			}
		}
		return fmt.Errorf("ListClients has no session for stock: %+v", srv.ListClients())
	})
	if info.Transport != "wireguard" || info.AssignedIP != bundle.Entry.AssignedIP || info.RemoteAddr.Addr().Unmap() != peerIP {
		t.Fatalf("ListClients entry for stock = %+v; want transport wireguard, IP %v, remote %v", info, bundle.Entry.AssignedIP, peerIP)
	}
	if info.PacketsIn == 0 || info.PacketsOut == 0 {
		t.Fatalf("stock session counted no traffic: %+v", info)
	}
	hs := ns.must(t, ctx, tools.wg, "show", wgIf, "latest-handshakes")
	fields := strings.Fields(hs)
	if len(fields) != 2 || fields[0] != wgKeys.PublicKey.String() {
		t.Fatalf("wg show %s latest-handshakes = %q; want the hub's key %s and a time", wgIf, hs, wgKeys.PublicKey)
	}
	if sec, err := strconv.ParseInt(fields[1], 10, 64); err != nil || sec == 0 {
		t.Fatalf("wg show %s latest-handshakes = %q: no handshake with the hub", wgIf, hs)
	}
	t.Logf("stock wireguard-go: ping and TCP through the hub OK; session %s from %v, handshake at %s", info.AssignedIP, info.RemoteAddr, fields[1])

	// 6. Disabling the client removes its peer from the hub's device: the
	// stock peer's packets are dropped from then on.
	if err := srv.DisableClient(ctx, "stock"); err != nil {
		t.Fatal(err)
	}
	interopEventually(t, 5*time.Second, func() error {
		if out, err := ns.run(ctx, tools.ping, "-c", "1", "-W", "1", hub); err == nil {
			return fmt.Errorf("ping still answered after DisableClient:\n%s", out)
		}
		return nil
	})
	if out, err := ns.run(ctx, tools.ping, "-c", "2", "-W", "1", hub); err == nil {
		t.Fatalf("a disabled client's ping was answered again:\n%s", out)
	}
	for _, c := range srv.ListClients() {
		if c.ClientID == "stock" {
			t.Fatalf("disabled client still has a session: %+v", c)
		}
	}
}

// interopTools are the absolute paths of the programs the test runs.
type interopTools struct {
	wireguardGo, wg, ip, ping, bash string
}

// interopRequire skips the test unless it can run: root, /dev/net/tun and
// the stock WireGuard tools on PATH.
func interopRequire(t *testing.T) *interopTools {
	t.Helper()
	const apt = "apt-get install -y wireguard-go wireguard-tools iproute2 iputils-ping"
	if os.Geteuid() != 0 {
		t.Skip("stock WireGuard interop needs root (network namespaces, veth and TUN devices); run the tests as root")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("stock WireGuard interop needs /dev/net/tun: %v", err)
	}
	var tt interopTools
	var missing []string
	for _, p := range []struct {
		name, pkg string
		dst       *string
	}{
		{"wireguard-go", "wireguard-go", &tt.wireguardGo},
		{"wg", "wireguard-tools", &tt.wg},
		{"ip", "iproute2", &tt.ip},
		{"ping", "iputils-ping", &tt.ping},
		{"bash", "bash", &tt.bash},
	} {
		path, err := exec.LookPath(p.name)
		if err != nil {
			missing = append(missing, fmt.Sprintf("%s (package %s)", p.name, p.pkg))
			continue
		}
		*p.dst = path
	}
	if len(missing) > 0 {
		t.Skipf("stock WireGuard interop: not on PATH: %s; install with: %s", strings.Join(missing, ", "), apt)
	}
	return &tt
}

// run runs a command and returns its combined output.
func (tt *interopTools) run(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// must runs a command and fails the test when it fails.
func (tt *interopTools) must(t *testing.T, ctx context.Context, name string, args ...string) string {
	t.Helper()
	out, err := tt.run(ctx, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return out
}

// interopVethAddrs picks the veth pair's /30: 10.99.0.0/30 when the host has
// no address there, otherwise another /30 of 10.99.0.0/16 that is free, so
// concurrent runs of the test on one machine do not collide.
func interopVethAddrs(t *testing.T, tt *interopTools, pid int) (host, peer netip.Addr) {
	t.Helper()
	for i := range 64 {
		idx := 0
		if i > 0 {
			idx = (pid + i) % 16384
		}
		base := netip.AddrFrom4([4]byte{10, 99, byte(idx >> 6), byte(idx&63) * 4})
		out, err := tt.run(context.Background(), tt.ip, "-o", "-4", "addr", "show", "to", netip.PrefixFrom(base, 30).String())
		if err != nil {
			t.Fatalf("ip addr show: %v\n%s", err, out)
		}
		if strings.TrimSpace(out) == "" {
			return base.Next(), base.Next().Next()
		}
	}
	t.Fatal("no free /30 in 10.99.0.0/16 for the veth pair")
	return
}

// interopEchoServer serves, on the hub's tunnel address port 7000, a line
// echo: it reads one line and answers "echo: " and the line.
func interopEchoServer(t *testing.T, srv *Server) {
	t.Helper()
	ln, err := srv.Listen("tcp", ":7000")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				fmt.Fprintf(c, "echo: %s", line)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
}

// interopNS runs commands inside a network namespace.
type interopNS struct {
	tools *interopTools
	name  string
}

func (n *interopNS) run(ctx context.Context, name string, args ...string) (string, error) {
	return n.tools.run(ctx, n.tools.ip, append([]string{"netns", "exec", n.name, name}, args...)...)
}

func (n *interopNS) must(t *testing.T, ctx context.Context, name string, args ...string) string {
	t.Helper()
	out, err := n.run(ctx, name, args...)
	if err != nil {
		t.Fatalf("ip netns exec %s %s %s: %v\n%s", n.name, filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return out
}

// startWireGuardGo runs `wireguard-go -f ifname` in the namespace until the
// test ends and waits for its interface to appear. Its log is printed when
// the test fails.
func (n *interopNS) startWireGuardGo(t *testing.T, ifname string) {
	t.Helper()
	log := &interopLog{}
	cmd := exec.Command(n.tools.ip, "netns", "exec", n.name, n.tools.wireguardGo, "-f", ifname)
	cmd.Env = append(os.Environ(), "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1", "LOG_LEVEL=verbose")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting wireguard-go: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		// SIGTERM lets wireguard-go remove its interface and UAPI socket.
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("wireguard-go log:\n%s", log)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			t.Fatalf("wireguard-go exited before its interface came up: %v\n%s", err, log)
		default:
		}
		if _, err := n.tools.run(context.Background(), n.tools.ip, "-n", n.name, "link", "show", "dev", ifname); err == nil {
			if _, err := os.Stat("/var/run/wireguard/" + ifname + ".sock"); err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("wireguard-go's interface %s did not appear in namespace %s\n%s", ifname, n.name, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// interopLog is a goroutine-safe buffer for a child process's output.
type interopLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *interopLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *interopLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// interopEventually retries f until it returns nil or the timeout passes.
func interopEventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
