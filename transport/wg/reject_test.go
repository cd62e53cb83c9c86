package wg

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/warrenvpn/warren/internal/packet"
)

// addrBind is a conn.Bind with one UDP socket per local address (each on a
// free port), so a test chooses the source address a peer sends from.
// Packets leave from the socket use selects; every socket receives.
type addrBind struct {
	addrs []netip.Addr
	cur   atomic.Int32

	mu    sync.Mutex
	conns []*net.UDPConn
}

func newAddrBind(addrs ...string) *addrBind {
	b := &addrBind{}
	for _, a := range addrs {
		b.addrs = append(b.addrs, netip.MustParseAddr(a))
	}
	return b
}

// use makes packets leave from the i-th address.
func (b *addrBind) use(i int) { b.cur.Store(int32(i)) }

func (b *addrBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conns != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	var fns []conn.ReceiveFunc
	for _, a := range b.addrs {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
		if err != nil {
			for _, c := range b.conns {
				c.Close()
			}
			b.conns = nil
			return nil, 0, err
		}
		b.conns = append(b.conns, c)
		fns = append(fns, func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
			n, from, err := c.ReadFromUDPAddrPort(packets[0])
			if err != nil {
				return 0, err
			}
			sizes[0] = n
			eps[0] = &conn.StdNetEndpoint{AddrPort: netip.AddrPortFrom(from.Addr().Unmap(), from.Port())}
			return 1, nil
		})
	}
	return fns, uint16(b.conns[0].LocalAddr().(*net.UDPAddr).Port), nil
}

func (b *addrBind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	for _, c := range b.conns {
		errs = append(errs, c.Close())
	}
	b.conns = nil
	return errors.Join(errs...)
}

func (b *addrBind) SetMark(uint32) error { return nil }

func (b *addrBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	b.mu.Lock()
	if b.conns == nil {
		b.mu.Unlock()
		return net.ErrClosed
	}
	c := b.conns[b.cur.Load()]
	b.mu.Unlock()
	dst := ep.(*conn.StdNetEndpoint).AddrPort
	for _, p := range bufs {
		if _, err := c.WriteToUDPAddrPort(p, dst); err != nil {
			return err
		}
	}
	return nil
}

func (b *addrBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return &conn.StdNetEndpoint{AddrPort: ap}, nil
}

func (b *addrBind) BatchSize() int { return 1 }

// TestRejectDropsBlockedSourceBeforeHandshake: a peer sending from a
// rejected address never completes a handshake and none of its datagrams
// reach wireguard-go; the same key from an allowed address does.
func TestRejectDropsBlockedSourceBeforeHandshake(t *testing.T) {
	blocked := netip.MustParseAddr("127.0.0.2")
	var asked atomic.Uint64
	hubSink := newSink()
	events := make(chan PeerEvent, 16)
	hubKey, clientKey := newKeypair(t), newKeypair(t)
	hub := newDevice(t, Config{
		PrivateKey:   hubKey.priv,
		Receive:      hubSink.receive,
		PeerEvent:    func(ev PeerEvent) { events <- ev },
		PollInterval: 50 * time.Millisecond,
		Reject: func(a netip.Addr) bool {
			asked.Add(1)
			return a == blocked
		},
	})
	if err := hub.AddPeer(Peer{PublicKey: clientKey.pub, AllowedIPs: []netip.Prefix{prefix("10.8.0.2/32")}}); err != nil {
		t.Fatal(err)
	}
	bind := newAddrBind("127.0.0.2", "127.0.0.3")
	client := newDevice(t, Config{PrivateKey: clientKey.priv, Receive: func([][]byte) {}, Bind: bind})
	err := client.AddPeer(Peer{PublicKey: hubKey.pub, AllowedIPs: []netip.Prefix{prefix("0.0.0.0/0")}, Endpoint: endpoint(hub), PersistentKeepalive: 1})
	if err != nil {
		t.Fatal(err)
	}
	toHub := func(payload string) [][]byte {
		return [][]byte{packet.BuildUDP(netip.AddrPortFrom(clientIP, 4000), netip.AddrPortFrom(hubIP, 53), []byte(payload))}
	}

	// From 127.0.0.2: wireguard-go retries its handshake every 5 s; wait
	// for at least two initiations to have been refused.
	deadline := time.Now().Add(20 * time.Second)
	for hub.Rejected() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("Rejected() = %d after 20 s, want at least 2", hub.Rejected())
		}
		client.Send(toHub("blocked"))
		time.Sleep(100 * time.Millisecond)
	}
	if asked.Load() != hub.Rejected() {
		t.Errorf("Reject asked %d times, Rejected() = %d: a datagram from an allowed source arrived", asked.Load(), hub.Rejected())
	}
	if n := hubSink.count(udpFrom(clientIP, "blocked")); n != 0 {
		t.Fatalf("hub received %d packets from a rejected source", n)
	}
	for _, p := range hub.Peers() {
		if !p.LastHandshake.IsZero() || p.RxBytes != 0 || p.Endpoint.IsValid() {
			t.Fatalf("peer state changed by a rejected source: %+v", p)
		}
	}
	select {
	case ev := <-events:
		t.Fatalf("peer event %+v from a rejected source", ev)
	default:
	}

	// The same peer from 127.0.0.3 gets in.
	bind.use(1)
	deadline = time.Now().Add(20 * time.Second)
	for hubSink.count(udpFrom(clientIP, "allowed")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("peer from an allowed source did not reach the hub within 20 s")
		}
		client.Send(toHub("allowed"))
		time.Sleep(100 * time.Millisecond)
	}
	ev := waitEvent(t, events, 5*time.Second)
	if !ev.Up || ev.Endpoint.Addr() != netip.MustParseAddr("127.0.0.3") {
		t.Fatalf("event %+v, want Up from 127.0.0.3", ev)
	}
}

// TestPeerEventRoamedOnNewEndpoint: a peer that is up and sends from a new
// address is reported Up again with Roamed and the new endpoint.
func TestPeerEventRoamedOnNewEndpoint(t *testing.T) {
	events := make(chan PeerEvent, 16)
	hubSink := newSink()
	hubKey, clientKey := newKeypair(t), newKeypair(t)
	hub := newDevice(t, Config{
		PrivateKey:   hubKey.priv,
		Receive:      hubSink.receive,
		PeerEvent:    func(ev PeerEvent) { events <- ev },
		PollInterval: 50 * time.Millisecond,
	})
	if err := hub.AddPeer(Peer{PublicKey: clientKey.pub, AllowedIPs: []netip.Prefix{prefix("10.8.0.2/32")}}); err != nil {
		t.Fatal(err)
	}
	bind := newAddrBind("127.0.0.2", "127.0.0.3")
	client := newDevice(t, Config{PrivateKey: clientKey.priv, Receive: func([][]byte) {}, Bind: bind})
	err := client.AddPeer(Peer{PublicKey: hubKey.pub, AllowedIPs: []netip.Prefix{prefix("0.0.0.0/0")}, Endpoint: endpoint(hub)})
	if err != nil {
		t.Fatal(err)
	}
	toHub := func(payload string) [][]byte {
		return [][]byte{packet.BuildUDP(netip.AddrPortFrom(clientIP, 4000), netip.AddrPortFrom(hubIP, 53), []byte(payload))}
	}
	client.Send(toHub("first"))
	hubSink.waitFor(t, 10*time.Second, udpFrom(clientIP, "first"))
	if ev := waitEvent(t, events, 5*time.Second); !ev.Up || ev.Roamed || ev.Endpoint.Addr() != netip.MustParseAddr("127.0.0.2") {
		t.Fatalf("first event %+v, want Up from 127.0.0.2", ev)
	}

	bind.use(1)
	client.Send(toHub("roamed"))
	hubSink.waitFor(t, 10*time.Second, udpFrom(clientIP, "roamed"))
	ev := waitEvent(t, events, 5*time.Second)
	if !ev.Up || !ev.Roamed || ev.Endpoint.Addr() != netip.MustParseAddr("127.0.0.3") {
		t.Fatalf("event after roaming %+v, want Up Roamed from 127.0.0.3", ev)
	}
}

// TestRejectFilterDoesNotAllocate: the receive filter works on the batch
// in place.
func TestRejectFilterDoesNotAllocate(t *testing.T) {
	var rejected atomic.Uint64
	b := &rejectBind{reject: func(a netip.Addr) bool { return a == netip.MustParseAddr("127.0.0.2") }, rejected: &rejected}
	eps := []conn.Endpoint{
		&conn.StdNetEndpoint{AddrPort: netip.MustParseAddrPort("127.0.0.2:1")},
		&conn.StdNetEndpoint{AddrPort: netip.MustParseAddrPort("127.0.0.3:1")},
		&conn.StdNetEndpoint{AddrPort: netip.MustParseAddrPort("[::ffff:127.0.0.2]:1")},
	}
	packets := [][]byte{make([]byte, 64), make([]byte, 64), make([]byte, 64)}
	sizes := make([]int, 3)
	recv := b.filter(func(p [][]byte, s []int, e []conn.Endpoint) (int, error) {
		for i := range s {
			s[i] = 64
		}
		copy(e, eps)
		return 3, nil
	})
	got := make([]conn.Endpoint, 3)
	allocs := testing.AllocsPerRun(100, func() { recv(packets, sizes, got) })
	if allocs != 0 {
		t.Errorf("filter allocates %v per batch", allocs)
	}
	if sizes[0] != 0 || sizes[1] != 64 || sizes[2] != 0 {
		t.Errorf("sizes = %v, want [0 64 0]", sizes)
	}
	if n := rejected.Load(); n != 2*101 {
		t.Errorf("rejected = %d, want %d", n, 2*101)
	}
}
