package etcdstore

import (
	"errors"
	"strings"

	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/warrenvpn/warren"
)

// netClient is a client in netstack mode (its own TCP/IP stack on the
// tunnel), connected to hub h once h knows it.
type netClient struct {
	*warren.Client
	ip netip.Addr
}

func connectNet(t *testing.T, bd *warren.ClientBundle, h *testHub) *netClient {
	t.Helper()
	cfg := configFor(bd, h)
	cfg.Reconnect.Disabled = true
	var c *warren.Client
	var info warren.ConnectInfo
	waitFor(t, 10*time.Second, bd.Entry.ClientID+" connects", func() bool {
		var err error
		c, err = warren.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		info, err = c.Connect(ctx)
		if err != nil {
			c.Close()
			return false
		}
		return true
	})
	t.Cleanup(func() { c.Close() })
	return &netClient{Client: c, ip: info.AssignedIP.Addr()}
}

// echoTCP serves a TCP echo on c's port.
func echoTCP(t *testing.T, c *netClient, port int) {
	t.Helper()
	ln, err := c.Listen("tcp", ":"+itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_, _ = io.Copy(conn, conn)
			}()
		}
	}()
}

// echoUDP answers each UDP datagram on c's port with the same bytes.
func echoUDP(t *testing.T, c *netClient, port int) {
	t.Helper()
	pc, err := c.ListenPacket("udp", ":"+itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
}

func itoa(n int) string {
	return netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(n)).String()[len("0.0.0.0:"):]
}

// tcpEcho sends payload to the echo at dst and reports whether it all came back.
func tcpEcho(from *netClient, dst netip.AddrPort, payload []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := from.Dial(ctx, "tcp", dst.String())
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Write(payload)
		errc <- err
	}()
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(conn, got); err != nil {
		return err
	}
	if err := <-errc; err != nil {
		return err
	}
	if !bytes.Equal(got, payload) {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// udpEcho reports whether one datagram to the echo at dst came back within wait.
func udpEcho(t *testing.T, from *netClient, dst netip.AddrPort, wait time.Duration) bool {
	t.Helper()
	pc, err := from.ListenPacket("udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	msg := []byte("ping " + time.Now().String())
	if _, err := pc.WriteTo(msg, net.UDPAddrFromAddrPort(dst)); err != nil {
		return false
	}
	_ = pc.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 2048)
	n, _, err := pc.ReadFrom(buf)
	return err == nil && bytes.Equal(buf[:n], msg)
}

// Two hubs on one etcd, a client on each: they exchange TCP and UDP through
// hub A -> hub B. Then the client on B reconnects to A, keeping its address,
// and a client left on B reaches it again within a second.
func TestClientsOnDifferentHubsReachEachOther(t *testing.T) {
	te := startEtcd(t)
	a, b := newHub(t, te, "/fleet/"), newHub(t, te, "/fleet/")
	ctx := context.Background()
	bundles := map[string]*warren.ClientBundle{}
	for _, id := range []string{"alice", "bob", "carol"} {
		bd, err := a.CreateClient(ctx, warren.ClientSpec{ClientID: id})
		if err != nil {
			t.Fatal(err)
		}
		bundles[id] = bd
	}
	alice := connectNet(t, bundles["alice"], a)
	bob := connectNet(t, bundles["bob"], b)
	echoTCP(t, bob, 7000)
	echoUDP(t, bob, 7001)

	payload := make([]byte, 1<<20)
	_, _ = rand.Read(payload)
	var err error
	waitFor(t, 10*time.Second, "alice on A reaches bob on B over TCP", func() bool {
		err = tcpEcho(alice, netip.AddrPortFrom(bob.ip, 7000), payload[:100])
		return err == nil
	})
	if err := tcpEcho(alice, netip.AddrPortFrom(bob.ip, 7000), payload); err != nil {
		t.Fatalf("1 MiB over TCP from A to B: %v", err)
	}
	waitFor(t, 5*time.Second, "alice on A reaches bob on B over UDP", func() bool {
		return udpEcho(t, alice, netip.AddrPortFrom(bob.ip, 7001), 200*time.Millisecond)
	})
	for _, ci := range a.ListClients() {
		if ci.ClientID == "bob" && ci.HubID == a.store.hubID {
			t.Fatal("bob has a session on A: the packets must cross from A to B")
		}
	}

	// carol stays on B; bob moves to A.
	carol := connectNet(t, bundles["carol"], b)
	if err := bob.Close(); err != nil {
		t.Fatal(err)
	}
	bob2 := connectNet(t, bundles["bob"], a)
	moved := time.Now()
	if bob2.ip != bob.ip {
		t.Fatalf("bob came back as %s, was %s", bob2.ip, bob.ip)
	}
	echoTCP(t, bob2, 7000)
	echoUDP(t, bob2, 7001)
	waitFor(t, 5*time.Second, "carol on B reaches bob, now on A, over UDP", func() bool {
		return udpEcho(t, carol, netip.AddrPortFrom(bob2.ip, 7001), 50*time.Millisecond)
	})
	took := time.Since(moved)
	t.Logf("bob moved from B to A; reached from B again after %v", took)
	if took > time.Second {
		t.Errorf("bob was reached again from B after %v, want under a second", took)
	}
	if err := tcpEcho(carol, netip.AddrPortFrom(bob2.ip, 7000), payload); err != nil {
		t.Fatalf("1 MiB over TCP from B to A: %v", err)
	}
	if !udpEcho(t, alice, netip.AddrPortFrom(bob2.ip, 7001), 2*time.Second) {
		t.Fatal("alice no longer reaches bob on her own hub")
	}
}

// sinkTCP counts what arrives on c's port and reports each connection's
// total on the returned channel.
func sinkTCP(t *testing.T, c *netClient, port int) <-chan int64 {
	t.Helper()
	ln, err := c.Listen("tcp", ":"+itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	totals := make(chan int64, 16)
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			n, _ := io.Copy(io.Discard, conn)
			conn.Close()
			totals <- n
		}
	}()
	return totals
}

// sendBulk sends size bytes over TCP from c to dst and returns the rate in
// MB/s, once the receiver has counted them all.
func sendBulk(t *testing.T, c *netClient, dst netip.AddrPort, totals <-chan int64, size int) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	chunk := make([]byte, 64<<10)
	start := time.Now()
	conn, err := c.Dial(ctx, "tcp", dst.String())
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	for sent := 0; sent < size; sent += len(chunk) {
		if _, err := conn.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close()
	select {
	case n := <-totals:
		if n != int64(size) {
			t.Fatalf("receiver counted %d bytes, sent %d", n, size)
		}
	case <-ctx.Done():
		t.Fatal("receiver did not finish")
	}
	return float64(size) / time.Since(start).Seconds() / 1e6
}

// TCP throughput between two clients across two hubs (A -> B), reported
// beside the same transfer between two clients on one hub, in one run.
func TestThroughputAcrossTwoHubsBesideOneHub(t *testing.T) {
	te := startEtcd(t)
	a, b := newHub(t, te, "/fleet/"), newHub(t, te, "/fleet/")
	ctx := context.Background()
	bundles := map[string]*warren.ClientBundle{}
	for _, id := range []string{"sender", "local", "remote"} {
		bd, err := a.CreateClient(ctx, warren.ClientSpec{ClientID: id})
		if err != nil {
			t.Fatal(err)
		}
		bundles[id] = bd
	}
	sender := connectNet(t, bundles["sender"], a)
	local := connectNet(t, bundles["local"], a)
	remote := connectNet(t, bundles["remote"], b)
	localSink, remoteSink := sinkTCP(t, local, 9000), sinkTCP(t, remote, 9000)
	echoUDP(t, remote, 9001)
	waitFor(t, 10*time.Second, "sender on A reaches remote on B", func() bool {
		return udpEcho(t, sender, netip.AddrPortFrom(remote.ip, 9001), 100*time.Millisecond)
	})
	const size = 32 << 20
	one := sendBulk(t, sender, netip.AddrPortFrom(local.ip, 9000), localSink, size)
	two := sendBulk(t, sender, netip.AddrPortFrom(remote.ip, 9000), remoteSink, size)
	t.Logf("TCP, %d MiB, netstack clients over WebSocket: one hub %.1f MB/s, two hubs (A -> B) %.1f MB/s", size>>20, one, two)
}

// etcd stopped and started again: clients on different hubs keep reaching
// each other meanwhile, and afterwards a client that moves is reached on its
// new hub.
func TestHubsForwardThroughEtcdRestart(t *testing.T) {
	te := startEtcd(t)
	a, b := newHub(t, te, "/fleet/"), newHub(t, te, "/fleet/")
	alice, bob, carol, bundles := fleetOfThree(t, a, b)
	bobAt := netip.AddrPortFrom(bob.ip, 7001)

	te.stop()
	if !udpEcho(t, alice, bobAt, 2*time.Second) {
		t.Fatal("alice on A no longer reaches bob on B while etcd is down")
	}
	te.start()
	moveBobToA(t, bob, carol, bundles, a)
}

// A hub whose lease is lost (here revoked, as etcd does when it has not
// heard from the hub for its lifetime) joins again: its records come back
// and a client that moves to it is reached there.
func TestHubRoutesRepublishedWhenLeaseIsLost(t *testing.T) {
	te := startEtcd(t)
	a, b := newHub(t, te, "/fleet/"), newHub(t, te, "/fleet/")
	_, bob, carol, bundles := fleetOfThree(t, a, b)
	ctx := context.Background()
	key := a.store.hubKey(a.pub)
	resp, err := a.store.cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("hub A's record: %v %v", resp, err)
	}
	lease := clientv3.LeaseID(resp.Kvs[0].Lease)
	if _, err := a.store.cli.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "hub A publishes itself again under a new lease", func() bool {
		resp, err := a.store.cli.Get(ctx, key)
		return err == nil && len(resp.Kvs) == 1 && clientv3.LeaseID(resp.Kvs[0].Lease) != lease
	})
	moveBobToA(t, bob, carol, bundles, a)
}

// fleetOfThree creates alice, bob and carol, connects alice to a and bob
// and carol to b, starts a UDP echo on bob's port 7001 and waits until
// alice reaches it.
func fleetOfThree(t *testing.T, a, b *testHub) (alice, bob, carol *netClient, bundles map[string]*warren.ClientBundle) {
	t.Helper()
	bundles = map[string]*warren.ClientBundle{}
	for _, id := range []string{"alice", "bob", "carol"} {
		bd, err := a.CreateClient(context.Background(), warren.ClientSpec{ClientID: id})
		if err != nil {
			t.Fatal(err)
		}
		bundles[id] = bd
	}
	alice = connectNet(t, bundles["alice"], a)
	bob = connectNet(t, bundles["bob"], b)
	carol = connectNet(t, bundles["carol"], b)
	echoUDP(t, bob, 7001)
	waitFor(t, 10*time.Second, "alice on A reaches bob on B", func() bool {
		return udpEcho(t, alice, netip.AddrPortFrom(bob.ip, 7001), 200*time.Millisecond)
	})
	return alice, bob, carol, bundles
}

// moveBobToA reconnects bob to a and waits until carol, on the other hub,
// reaches him there.
func moveBobToA(t *testing.T, bob, carol *netClient, bundles map[string]*warren.ClientBundle, a *testHub) {
	t.Helper()
	if err := bob.Close(); err != nil {
		t.Fatal(err)
	}
	bob2 := connectNet(t, bundles["bob"], a)
	echoUDP(t, bob2, 7001)
	waitFor(t, 10*time.Second, "carol on B reaches bob, now on A", func() bool {
		return udpEcho(t, carol, netip.AddrPortFrom(bob2.ip, 7001), 100*time.Millisecond)
	})
}

func TestHubDialToClientOfAnotherHubIsRefusedClearly(t *testing.T) {
	te := startEtcd(t)
	socket := func(c *warren.ServerConfig) { c.ForwardingMode = warren.ForwardSocket }
	a, b := newHubWith(t, te, "/fleet/", socket), newHubWith(t, te, "/fleet/", socket)
	bd, err := a.CreateClient(context.Background(), warren.ClientSpec{ClientID: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	bob := connectNet(t, bd, b)
	echoTCP(t, bob, 7000)
	to := netip.AddrPortFrom(bob.ip, 7000).String()

	// B serves bob: its Dial reaches him.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := b.Dial(ctx, "tcp", to)
	if err != nil {
		t.Fatalf("B dialling its own client: %v", err)
	}
	c.Close()

	// A learns that B serves bob, and refuses at once rather than time out.
	waitFor(t, 10*time.Second, "A to refuse a Dial to bob on B", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		var c net.Conn
		c, err = a.Dial(ctx, "tcp", to)
		if c != nil {
			c.Close()
		}
		return errors.Is(err, warren.ErrNotSupported)
	})
	if !strings.Contains(err.Error(), "another hub") {
		t.Errorf("error %q does not say another hub serves the address", err)
	}
}
