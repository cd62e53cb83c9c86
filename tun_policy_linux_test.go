//go:build linux

package warren

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/warrenvpn/warren/forward"
	"github.com/warrenvpn/warren/forward/netstack"
	fwdtun "github.com/warrenvpn/warren/forward/tun"
)

// envTUNPolicyChild is set in the child TestTUNPolicyTableInNamespaces
// starts inside the hub namespace: the server namespace's name.
const envTUNPolicyChild = "WARREN_TUN_POLICY_CHILD"

// TestTUNPolicyTableInNamespaces: every case of policyTable, the table the
// userspace engine's decisions are checked against (TestPolicyTable), holds
// end to end as the TUN engine's nftables rules: a client's TCP connection
// to the case's destination is accepted there (allow), accepted at the
// target (forceTarget, DNAT), or never arrives (block). The policy goes to
// the engine directly, past the hub's pipeline, which drops blocked
// packets before any engine sees them: here only nftables decides.
func TestTUNPolicyTableInNamespaces(t *testing.T) {
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
	hub := fmt.Sprintf("wpol-hub-%d", os.Getpid())
	srv := fmt.Sprintf("wpol-srv-%d", os.Getpid())
	for _, ns := range []string{hub, srv} {
		ipcmd("netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		ipcmd("-n", ns, "link", "set", "lo", "up")
	}
	ipcmd("-n", hub, "link", "add", "hv", "type", "veth", "peer", "name", "sv", "netns", srv)
	ipcmd("-n", hub, "addr", "add", "192.168.77.1/24", "dev", "hv")
	ipcmd("-n", hub, "addr", "add", "fd00:77::1/64", "dev", "hv", "nodad")
	ipcmd("-n", hub, "link", "set", "hv", "up")
	ipcmd("-n", hub, "route", "add", "default", "via", "192.168.77.2")
	ipcmd("-n", hub, "-6", "route", "add", "default", "via", "fd00:77::2", "dev", "hv")
	ipcmd("-n", srv, "addr", "add", "192.168.77.2/24", "dev", "sv")
	ipcmd("-n", srv, "addr", "add", "fd00:77::2/64", "dev", "sv", "nodad")
	// Every destination and target of the table lives on the server host.
	seen := map[string]bool{}
	for _, tc := range policyTable {
		for _, a := range []string{tc.dst, tc.target} {
			if ip := netip.MustParseAddr(a); !ip.IsLoopback() && !seen[a] {
				seen[a] = true
				ipcmd("-n", srv, "addr", "add", netip.PrefixFrom(ip, ip.BitLen()).String(), "dev", "sv", "nodad")
			}
		}
	}
	ipcmd("-n", srv, "link", "set", "sv", "up")

	cmd := exec.Command("ip", "netns", "exec", hub, os.Args[0], "-test.run=^TestTUNPolicyTableChild$", "-test.v", "-test.timeout=240s")
	cmd.Env = append(os.Environ(), envTUNPolicyChild+"="+srv)
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestTUNPolicyTableChild")) {
		t.Fatalf("child failed: %v", err)
	}
}

// TestTUNPolicyTableChild runs inside the hub namespace.
func TestTUNPolicyTableChild(t *testing.T) {
	srvNS := os.Getenv(envTUNPolicyChild)
	if srvNS == "" {
		t.Skip("runs inside the namespaces TestTUNPolicyTableInNamespaces creates")
	}
	ln := listenInNamespace(t, srvNS, "tcp", ":0")
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	arrived := make(chan netip.Addr, 16) // the address each connection reached
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			arrived <- c.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
			c.Close()
		}
	}()
	defer func() { ln.Close(); <-done }()

	for i, tc := range policyTable {
		dst := netip.MustParseAddr(tc.dst)
		if dst.IsLoopback() {
			// The kernel drops a packet for 127.0.0.0/8 or ::1 that comes
			// in on any device but lo (a martian) whatever the rules say;
			// the userspace engine reaches the hub's own loopback.
			t.Logf("case %d (%s): loopback, the kernel's own rule; not an nftables case", i, tc.dst)
			continue
		}
		t.Run(fmt.Sprintf("case%d_%s", i, tc.dst), func(t *testing.T) {
			cp, err := compilePolicy(tc.policy)
			if err != nil {
				t.Fatal(err)
			}
			subnet := netip.MustParsePrefix("10.8.0.0/24")
			if dst.Is6() {
				subnet = netip.MustParsePrefix("fd00:8::/64")
			}
			conn, err := dialThroughTUN(t, subnet, cp.tunPolicy(), netip.AddrPortFrom(dst, port), tc.want == verdictBlock)
			switch tc.want {
			case verdictBlock:
				if err == nil {
					conn.Close()
					t.Fatalf("%+v: reached %s, want blocked", tc.policy, dst)
				}
				select {
				case a := <-arrived:
					t.Fatalf("%+v: a connection arrived at %s, want none", tc.policy, a)
				default:
				}
			default:
				if err != nil {
					t.Fatalf("%+v: dial %s: %v", tc.policy, dst, err)
				}
				conn.Close()
				select {
				case a := <-arrived:
					if a.String() != tc.target {
						t.Fatalf("%+v: the connection to %s arrived at %s, want %s", tc.policy, dst, a, tc.target)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("the server host accepted nothing")
				}
			}
		})
	}
}

// dialThroughTUN starts a TUN engine with NAT and policy on subnet and a
// netstack client at its second address, and dials dst from the client.
// The engine and client are closed at the end of the test.
func dialThroughTUN(t *testing.T, subnet netip.Prefix, policy *fwdtun.Policy, dst netip.AddrPort, expectFail bool) (net.Conn, error) {
	t.Helper()
	hubIP := subnet.Addr().Next()
	clientIP := hubIP.Next()
	cli := netstack.New(netstack.Options{})
	e := fwdtun.New(fwdtun.Options{Name: "wpol0", NAT: true, EnableForwarding: true, Policy: policy, HealthInterval: -1})
	err := e.Start(forward.Config{Subnet: subnet, HubIP: hubIP, LocalIP: hubIP, MTU: 1420,
		Deliver: func(bufs [][]byte, offset int) { _ = cli.Send(bufs, offset) }})
	if err != nil {
		t.Fatalf("engine: %v", err)
	}
	err = cli.Start(forward.Config{Subnet: subnet, HubIP: hubIP, LocalIP: clientIP, MTU: 1420,
		Deliver: func(bufs [][]byte, offset int) {
			if err := e.Send(bufs, offset); err != nil && !errors.Is(err, net.ErrClosed) {
				t.Errorf("engine Send: %v", err)
			}
		}})
	if err != nil {
		e.Close()
		t.Fatalf("client netstack: %v", err)
	}
	t.Cleanup(func() {
		cli.Close()
		if err := e.Close(); err != nil {
			t.Errorf("engine Close: %v", err)
		}
	})
	// A blocked flow never gets an answer: its dial ends at the timeout.
	timeout := 20 * time.Second
	if expectFail {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return cli.DialContext(ctx, "tcp", dst.String())
}
