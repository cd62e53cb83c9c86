package wg

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/warrenvpn/warren/internal/packet"
)

// udpFrom matches UDP datagrams from src whose payload is payload.
func udpFrom(src netip.Addr, payload string) func([]byte) bool {
	return func(b []byte) bool {
		s, _, p, ok := packet.ParseUDP(b)
		return ok && s.Addr() == src && string(p) == payload
	}
}

// TestInteropWithStockWireGuardGo runs the peer the way any wireguard-go user
// writes it: a netstack TUN and a device configured over UAPI. It pings the
// hub and exchanges UDP datagrams with it.
func TestInteropWithStockWireGuardGo(t *testing.T) {
	hubKey, peerKey := newKeypair(t), newKeypair(t)

	var hubp atomic.Pointer[Device]
	echo := func(bufs [][]byte) {
		hub := hubp.Load()
		for _, b := range bufs {
			if reply, ok := packet.EchoReply(b); ok {
				hub.Send([][]byte{reply})
				continue
			}
			if src, dst, payload, ok := packet.ParseUDP(b); ok && dst.Addr() == hubIP {
				hub.Send([][]byte{packet.BuildUDP(dst, src, payload)})
			}
		}
	}
	hub := newDevice(t, Config{PrivateKey: hubKey.priv, Receive: echo, PollInterval: 50 * time.Millisecond})
	hubp.Store(hub)
	if err := hub.AddPeer(Peer{PublicKey: peerKey.pub, AllowedIPs: []netip.Prefix{prefix("10.8.0.2/32")}}); err != nil {
		t.Fatal(err)
	}

	tunDev, tnet, err := netstack.CreateNetTUN([]netip.Addr{clientIP}, nil, DefaultMTU)
	if err != nil {
		t.Fatal(err)
	}
	peer := device.NewDevice(tunDev, conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	defer peer.Close()
	err = peer.IpcSet(fmt.Sprintf("private_key=%x\npublic_key=%x\nendpoint=127.0.0.1:%d\nallowed_ip=0.0.0.0/0\npersistent_keepalive_interval=1\n",
		peerKey.priv, hubKey.pub, hub.Port()))
	if err != nil {
		t.Fatal(err)
	}
	if err := peer.Up(); err != nil {
		t.Fatal(err)
	}

	t.Run("ping", func(t *testing.T) {
		pc, err := tnet.DialPingAddr(netip.Addr{}, hubIP)
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		for seq := uint16(1); seq <= 3; seq++ {
			req := make([]byte, 8, 64)
			req[0] = packet.ICMPv4EchoRequest
			binary.BigEndian.PutUint16(req[6:8], seq)
			req = append(req, fmt.Sprintf("warren ping %d", seq)...)
			if _, err := pc.Write(req); err != nil {
				t.Fatal(err)
			}
			pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			reply := make([]byte, 1500)
			n, err := pc.Read(reply)
			if err != nil {
				t.Fatalf("ping %d: %v", seq, err)
			}
			reply = reply[:n]
			if n < 8 || reply[0] != packet.ICMPv4EchoReply || binary.BigEndian.Uint16(reply[6:8]) != seq ||
				!bytes.Equal(reply[8:], req[8:]) {
				t.Fatalf("ping %d: bad reply % x", seq, reply)
			}
		}
	})

	t.Run("udp", func(t *testing.T) {
		uc, err := tnet.DialUDPAddrPort(netip.AddrPort{}, netip.AddrPortFrom(hubIP, 7))
		if err != nil {
			t.Fatal(err)
		}
		defer uc.Close()
		buf := make([]byte, 2000)
		for i, size := range []int{1, 100, 1000, DefaultMTU - 28} {
			msg := bytes.Repeat([]byte{byte('a' + i)}, size)
			if _, err := uc.Write(msg); err != nil {
				t.Fatal(err)
			}
			uc.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := uc.Read(buf)
			if err != nil {
				t.Fatalf("datagram of %d bytes: %v", size, err)
			}
			if !bytes.Equal(buf[:n], msg) {
				t.Fatalf("datagram of %d bytes: echo of %d bytes differs", size, n)
			}
		}
	})

	peers := hub.Peers()
	if len(peers) != 1 || peers[0].PublicKey != peerKey.pub || peers[0].LastHandshake.IsZero() ||
		peers[0].RxBytes == 0 || peers[0].TxBytes == 0 || !peers[0].Endpoint.Addr().IsLoopback() ||
		len(peers[0].AllowedIPs) != 1 || peers[0].AllowedIPs[0] != prefix("10.8.0.2/32") {
		t.Errorf("hub.Peers() = %+v", peers)
	}
}

// hubAndClient makes a hub Device with the client as a peer (10.8.0.2/32 and
// fd00::2/128), and a client Device with the hub as its only peer (all
// addresses, endpoint on loopback).
func hubAndClient(t testing.TB, hubCfg, clientCfg Config) (hub, client *Device, clientKey keypair) {
	t.Helper()
	hubKey, clientKey := newKeypair(t), newKeypair(t)
	hubCfg.PrivateKey, clientCfg.PrivateKey = hubKey.priv, clientKey.priv
	hub = newDevice(t, hubCfg)
	client = newDevice(t, clientCfg)
	if err := hub.AddPeer(Peer{PublicKey: clientKey.pub, AllowedIPs: []netip.Prefix{prefix("10.8.0.2/32"), prefix("fd00::2/128")}}); err != nil {
		t.Fatal(err)
	}
	err := client.AddPeer(Peer{
		PublicKey:  hubKey.pub,
		AllowedIPs: []netip.Prefix{prefix("0.0.0.0/0"), prefix("::/0")},
		Endpoint:   endpoint(hub),
	})
	if err != nil {
		t.Fatal(err)
	}
	return hub, client, clientKey
}

func TestPeerEventUpOnHandshakeDownAfterSilence(t *testing.T) {
	events := make(chan PeerEvent, 16)
	hubCfg := Config{
		Receive:         func([][]byte) {},
		PeerEvent:       func(ev PeerEvent) { events <- ev },
		DeadPeerTimeout: 2 * time.Second,
		PollInterval:    50 * time.Millisecond,
	}
	hubKey, clientKey := newKeypair(t), newKeypair(t)
	hubCfg.PrivateKey = hubKey.priv
	hub := newDevice(t, hubCfg)
	client, err := New(Config{PrivateKey: clientKey.priv, Receive: func([][]byte) {}})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if err := hub.AddPeer(Peer{PublicKey: clientKey.pub, AllowedIPs: []netip.Prefix{prefix("10.8.0.2/32")}}); err != nil {
		t.Fatal(err)
	}
	// Keepalives every second keep the peer up past DeadPeerTimeout.
	err = client.AddPeer(Peer{PublicKey: hubKey.pub, AllowedIPs: []netip.Prefix{prefix("0.0.0.0/0")}, Endpoint: endpoint(hub), PersistentKeepalive: 1})
	if err != nil {
		t.Fatal(err)
	}

	up := waitEvent(t, events, 5*time.Second)
	want := PeerEvent{PublicKey: clientKey.pub, Up: true, Endpoint: endpoint(client)}
	if up != want {
		t.Fatalf("first event = %+v, want %+v", up, want)
	}

	select {
	case ev := <-events:
		t.Fatalf("event %+v while the peer sends keepalives", ev)
	case <-time.After(3 * time.Second):
	}

	closed := time.Now()
	client.Close()
	down := waitEvent(t, events, 5*time.Second)
	want.Up = false
	if down != want {
		t.Fatalf("event after close = %+v, want %+v", down, want)
	}
	// The last keepalive left at most a second before Close.
	if took := time.Since(closed); took < time.Second {
		t.Errorf("Down %v after close, want about DeadPeerTimeout (2s)", took)
	}
}

func TestRemovePeerStopsTrafficAndKeyRotationWorks(t *testing.T) {
	events := make(chan PeerEvent, 16)
	hubSink := newSink()
	clientA := newSink()
	hub, a, keyA := hubAndClient(t,
		Config{Receive: hubSink.receive, PeerEvent: func(ev PeerEvent) { events <- ev }, PollInterval: 50 * time.Millisecond},
		Config{Receive: clientA.receive})
	hubToClient := func(payload string) [][]byte {
		return [][]byte{packet.BuildUDP(netip.AddrPortFrom(hubIP, 53), netip.AddrPortFrom(clientIP, 4000), []byte(payload))}
	}
	clientToHub := func(payload string) [][]byte {
		return [][]byte{packet.BuildUDP(netip.AddrPortFrom(clientIP, 4000), netip.AddrPortFrom(hubIP, 53), []byte(payload))}
	}

	a.Send(clientToHub("a1"))
	hubSink.waitFor(t, 5*time.Second, udpFrom(clientIP, "a1"))
	if ev := waitEvent(t, events, 5*time.Second); !ev.Up || ev.PublicKey != keyA.pub {
		t.Fatalf("event %+v, want A up", ev)
	}

	if err := hub.RemovePeer(keyA.pub); err != nil {
		t.Fatal(err)
	}
	if err := hub.RemovePeer(keyA.pub); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("second RemovePeer: %v, want ErrUnknownPeer", err)
	}
	if ev := waitEvent(t, events, 5*time.Second); ev.Up || ev.PublicKey != keyA.pub {
		t.Fatalf("event %+v, want A down", ev)
	}
	a.Send(clientToHub("a2"))
	hub.Send(hubToClient("to removed A"))

	// Rotate: a new key for the same address.
	clientB := newSink()
	keyB := newKeypair(t)
	b := newDevice(t, Config{PrivateKey: keyB.priv, Receive: clientB.receive})
	if err := b.AddPeer(Peer{PublicKey: hub.PublicKey(), AllowedIPs: []netip.Prefix{prefix("0.0.0.0/0")}, Endpoint: endpoint(hub)}); err != nil {
		t.Fatal(err)
	}
	if err := hub.AddPeer(Peer{PublicKey: keyB.pub, AllowedIPs: []netip.Prefix{prefix("10.8.0.2/32")}}); err != nil {
		t.Fatal(err)
	}
	b.Send(clientToHub("b1"))
	hubSink.waitFor(t, 5*time.Second, udpFrom(clientIP, "b1"))
	hub.Send(hubToClient("to B"))
	clientB.waitFor(t, 5*time.Second, udpFrom(hubIP, "to B"))
	a.Send(clientToHub("a3"))
	time.Sleep(500 * time.Millisecond) // time for A's packets to arrive, were they accepted

	for _, p := range []string{"a2", "a3"} {
		if n := hubSink.count(udpFrom(clientIP, p)); n != 0 {
			t.Errorf("hub received %q from the removed peer", p)
		}
	}
	if n := clientA.count(udpFrom(hubIP, "to removed A")); n != 0 {
		t.Errorf("removed peer received the hub's packet")
	}
	peers := hub.Peers()
	if len(peers) != 1 || peers[0].PublicKey != keyB.pub {
		t.Errorf("hub.Peers() = %+v, want only B", peers)
	}
}

func TestSpoofedSourceNeverReachesReceive(t *testing.T) {
	hubSink := newSink()
	hub, client, _ := hubAndClient(t, Config{Receive: hubSink.receive}, Config{Receive: func([][]byte) {}})
	hub6 := netip.MustParseAddr("fd00::1")
	spoofed := []netip.Addr{
		netip.MustParseAddr("10.8.0.3"),
		netip.MustParseAddr("10.8.0.1"),
		netip.MustParseAddr("192.0.2.1"),
		netip.MustParseAddr("fd00::3"),
	}
	for round := range 5 {
		var batch [][]byte
		for _, src := range spoofed {
			dst := hubIP
			if src.Is6() {
				dst = hub6
			}
			batch = append(batch, packet.BuildUDP(netip.AddrPortFrom(src, 1), netip.AddrPortFrom(dst, 2), []byte("spoofed")))
		}
		good := fmt.Sprintf("good %d", round)
		batch = append(batch,
			packet.BuildUDP(netip.AddrPortFrom(clientIP, 1), netip.AddrPortFrom(hubIP, 2), []byte(good)),
			packet.BuildUDP(netip.MustParseAddrPort("[fd00::2]:1"), netip.AddrPortFrom(hub6, 2), []byte(good)))
		if err := client.Send(batch); err != nil {
			t.Fatal(err)
		}
		hubSink.waitFor(t, 5*time.Second, udpFrom(clientIP, good))
		hubSink.waitFor(t, 5*time.Second, udpFrom(netip.MustParseAddr("fd00::2"), good))
	}
	for _, p := range hubSink.all() {
		if src, _, ok := packet.Addrs(p); !ok || (src != clientIP && src != netip.MustParseAddr("fd00::2")) {
			t.Errorf("Receive got a packet from %v, outside the peer's AllowedIPs", src)
		}
	}
	if got := hub.Stats().Received; got != 10 {
		t.Errorf("hub Stats().Received = %d, want 10", got)
	}
}

// exchange sends n packets of size bytes from one Device to another, at most
// window in flight, and waits for them (or gives up after a second without
// progress). It returns how many arrived.
func exchange(send func([][]byte), got *atomic.Uint64, arrived <-chan struct{}, pkt []byte, n, window int) int {
	start := int(got.Load())
	batch := make([][]byte, 64)
	for i := range batch {
		batch[i] = pkt
	}
	sent, lost := 0, 0
	for sent < n {
		inFlight := sent - lost - (int(got.Load()) - start)
		if inFlight+len(batch) <= window {
			k := min(len(batch), n-sent)
			send(batch[:k])
			sent += k
			continue
		}
		select {
		case <-arrived:
		case <-time.After(2 * time.Second):
			// Long enough for a loaded machine: a window declared lost
			// too early would overfill the queue.
			lost += inFlight // assume the rest of the window was lost; go on
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for int(got.Load())-start < n && time.Now().Before(deadline) {
		select {
		case <-arrived:
		case <-time.After(10 * time.Millisecond):
		}
	}
	return int(got.Load()) - start
}

// sendFunc adapts Device.Send to exchange.
func sendFunc(d *Device) func([][]byte) { return func(b [][]byte) { d.Send(b) } }

// counter is a Receive func that counts packets and signals arrivals.
type counter struct {
	n       atomic.Uint64
	arrived chan struct{}
}

func newCounter() *counter { return &counter{arrived: make(chan struct{}, 1)} }

func (c *counter) receive(bufs [][]byte) {
	c.n.Add(uint64(len(bufs)))
	select {
	case c.arrived <- struct{}{}:
	default:
	}
}

func TestTenThousandPacketsEachWayStatsMatch(t *testing.T) {
	const n = 10000
	hubC, clientC := newCounter(), newCounter()
	hub, client, _ := hubAndClient(t, Config{Receive: hubC.receive}, Config{Receive: clientC.receive})

	// Handshake first, so that no packet waits in wireguard-go's staging queue.
	client.Send([][]byte{packet.BuildUDP(netip.AddrPortFrom(clientIP, 1), netip.AddrPortFrom(hubIP, 2), []byte("hello"))})
	for hubC.n.Load() == 0 {
		select {
		case <-hubC.arrived:
		case <-time.After(5 * time.Second):
			t.Fatal("no handshake")
		}
	}
	hub0, client0 := hub.Stats(), client.Stats()

	up := packet.BuildUDP(netip.AddrPortFrom(clientIP, 1), netip.AddrPortFrom(hubIP, 2), make([]byte, 1000))
	down := packet.BuildUDP(netip.AddrPortFrom(hubIP, 2), netip.AddrPortFrom(clientIP, 1), make([]byte, 1000))
	if got := exchange(sendFunc(client), &hubC.n, hubC.arrived, up, n, 256); got != n {
		t.Errorf("hub received %d of %d packets", got, n)
	}
	if got := exchange(sendFunc(hub), &clientC.n, clientC.arrived, down, n, 256); got != n {
		t.Errorf("client received %d of %d packets", got, n)
	}

	hub1, client1 := hub.Stats(), client.Stats()
	delta := func(a, b Stats) Stats {
		return Stats{Received: b.Received - a.Received, Sent: b.Sent - a.Sent, Dropped: b.Dropped - a.Dropped}
	}
	hubD, clientD := delta(hub0, hub1), delta(client0, client1)
	if clientD != (Stats{Sent: n, Received: n}) || hubD != (Stats{Sent: n, Received: n}) {
		t.Errorf("stats: hub %+v, client %+v; want Sent and Received %d, nothing dropped", hubD, clientD, n)
	}
	if hubD.Received != clientD.Sent || clientD.Received != hubD.Sent {
		t.Errorf("stats do not match: hub %+v, client %+v", hubD, clientD)
	}
}

func TestCloseStopsEverythingAndSendErrors(t *testing.T) {
	hubSink := newSink()
	hubKey, clientKey := newKeypair(t), newKeypair(t)
	hub, err := New(Config{PrivateKey: hubKey.priv, Receive: hubSink.receive, PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	client, err := New(Config{PrivateKey: clientKey.priv, Receive: func([][]byte) {}})
	if err != nil {
		t.Fatal(err)
	}
	hub.AddPeer(Peer{PublicKey: clientKey.pub, AllowedIPs: []netip.Prefix{prefix("10.8.0.2/32")}})
	client.AddPeer(Peer{PublicKey: hubKey.pub, AllowedIPs: []netip.Prefix{prefix("0.0.0.0/0")}, Endpoint: endpoint(hub), PersistentKeepalive: 1})
	client.Send([][]byte{packet.BuildUDP(netip.AddrPortFrom(clientIP, 1), netip.AddrPortFrom(hubIP, 2), []byte("x"))})
	hubSink.waitFor(t, 5*time.Second, udpFrom(clientIP, "x"))

	for _, d := range []*Device{client, hub} {
		if err := d.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := d.Close(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("second Close: %v, want net.ErrClosed", err)
		}
		if err := d.Send([][]byte{{0x45}}); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Send after Close: %v, want net.ErrClosed", err)
		}
		if err := d.AddPeer(Peer{PublicKey: newKeypair(t).pub}); !errors.Is(err, net.ErrClosed) {
			t.Errorf("AddPeer after Close: %v, want net.ErrClosed", err)
		}
		if err := d.RemovePeer(hubKey.pub); !errors.Is(err, net.ErrClosed) {
			t.Errorf("RemovePeer after Close: %v, want net.ErrClosed", err)
		}
		if p := d.Peers(); p != nil {
			t.Errorf("Peers after Close = %v", p)
		}
	}
	goleak.VerifyNone(t)
}

func TestNewRejectsBadConfig(t *testing.T) {
	key := newKeypair(t).priv
	recv := func([][]byte) {}
	tests := []struct {
		name  string
		cfg   Config
		field string
	}{
		{"zero key", Config{Receive: recv}, "PrivateKey"},
		{"no Receive", Config{PrivateKey: key}, "Receive"},
		{"negative port", Config{PrivateKey: key, Receive: recv, ListenPort: -1}, "ListenPort"},
		{"port too big", Config{PrivateKey: key, Receive: recv, ListenPort: 70000}, "ListenPort"},
		{"MTU too small", Config{PrivateKey: key, Receive: recv, MTU: 20}, "MTU"},
		{"MTU too big", Config{PrivateKey: key, Receive: recv, MTU: 70000}, "MTU"},
		{"negative timeout", Config{PrivateKey: key, Receive: recv, DeadPeerTimeout: -time.Second}, "DeadPeerTimeout"},
		{"negative poll", Config{PrivateKey: key, Receive: recv, PollInterval: -time.Second}, "PollInterval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := New(tt.cfg)
			if err == nil {
				d.Close()
				t.Fatal("New succeeded")
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tt.field {
				t.Fatalf("New: %v, want a ConfigError for %s", err, tt.field)
			}
		})
	}
}

func TestNewFailsOnPortInUse(t *testing.T) {
	a := newDevice(t, Config{PrivateKey: newKeypair(t).priv, Receive: func([][]byte) {}})
	_, err := New(Config{PrivateKey: newKeypair(t).priv, Receive: func([][]byte) {}, ListenPort: int(a.Port())})
	if err == nil {
		t.Fatal("second device on the same port: no error")
	}
}

func TestAddPeerRejectsBadPeer(t *testing.T) {
	own := newKeypair(t)
	d := newDevice(t, Config{PrivateKey: own.priv, Receive: func([][]byte) {}})
	pub := newKeypair(t).pub
	tests := []struct {
		name  string
		peer  Peer
		field string
	}{
		{"zero key", Peer{}, "Peer.PublicKey"},
		{"own key", Peer{PublicKey: own.pub}, "Peer.PublicKey"},
		{"bad prefix", Peer{PublicKey: pub, AllowedIPs: []netip.Prefix{prefix("10.0.0.0/8"), {}}}, "Peer.AllowedIPs[1]"},
		{"endpoint port 0", Peer{PublicKey: pub, Endpoint: netip.MustParseAddrPort("127.0.0.1:0")}, "Peer.Endpoint"},
		{"endpoint without address", Peer{PublicKey: pub, Endpoint: netip.AddrPortFrom(netip.Addr{}, 5)}, "Peer.Endpoint"},
		{"endpoint unspecified", Peer{PublicKey: pub, Endpoint: netip.MustParseAddrPort("0.0.0.0:51820")}, "Peer.Endpoint"},
		{"negative keepalive", Peer{PublicKey: pub, PersistentKeepalive: -1}, "Peer.PersistentKeepalive"},
		{"keepalive too big", Peer{PublicKey: pub, PersistentKeepalive: 1 << 16}, "Peer.PersistentKeepalive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := d.AddPeer(tt.peer)
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tt.field {
				t.Fatalf("AddPeer: %v, want a ConfigError for %s", err, tt.field)
			}
		})
	}
	if p := d.Peers(); len(p) != 0 {
		t.Errorf("bad peers changed the device: %+v", p)
	}
}

func TestAddPeerReplacesAllowedIPsAndKeepsEndpoint(t *testing.T) {
	d := newDevice(t, Config{PrivateKey: newKeypair(t).priv, Receive: func([][]byte) {}})
	pub := newKeypair(t).pub
	psk := [32]byte{1}
	ep := netip.MustParseAddrPort("127.0.0.1:9")
	if err := d.AddPeer(Peer{PublicKey: pub, AllowedIPs: []netip.Prefix{prefix("10.8.0.2/32"), prefix("10.9.0.0/24")}, Endpoint: ep, PresharedKey: &psk}); err != nil {
		t.Fatal(err)
	}
	if err := d.AddPeer(Peer{PublicKey: pub, AllowedIPs: []netip.Prefix{prefix("10.8.0.5/24")}}); err != nil {
		t.Fatal(err)
	}
	p := d.Peers()
	if len(p) != 1 || len(p[0].AllowedIPs) != 1 || p[0].AllowedIPs[0] != prefix("10.8.0.0/24") || p[0].Endpoint != ep {
		t.Errorf("Peers() = %+v, want one peer, AllowedIPs [10.8.0.0/24], endpoint %v", p, ep)
	}
}

func TestParsePeersSkipsBadLines(t *testing.T) {
	const ipc = `private_key=0000
listen_port=51820
allowed_ip=10.0.0.0/8
public_key=0101010101010101010101010101010101010101010101010101010101010101
preshared_key=0000000000000000000000000000000000000000000000000000000000000000
protocol_version=1
endpoint=[::1]:51820
last_handshake_time_sec=1700000000
last_handshake_time_nsec=5
tx_bytes=10
rx_bytes=oops
allowed_ip=10.8.0.2/32
allowed_ip=not a prefix
garbage
public_key=zz
endpoint=nowhere
`
	peers := parsePeers(ipc)
	if len(peers) != 2 {
		t.Fatalf("got %d peers, want 2", len(peers))
	}
	p := peers[0]
	want := PeerStatus{
		PublicKey:     [32]byte{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
		Endpoint:      netip.MustParseAddrPort("[::1]:51820"),
		LastHandshake: time.Unix(1700000000, 5),
		TxBytes:       10,
		AllowedIPs:    []netip.Prefix{prefix("10.8.0.2/32")},
	}
	if fmt.Sprint(p) != fmt.Sprint(want) {
		t.Errorf("peer 0 = %+v\nwant %+v", p, want)
	}
	if peers[1].PublicKey != ([32]byte{}) || peers[1].Endpoint.IsValid() {
		t.Errorf("peer 1 = %+v, want zero", peers[1])
	}
}

func TestBridgeReadBatchesAndHonoursOffset(t *testing.T) {
	b := newBridge(100, func([][]byte) {})
	defer b.Close()
	b.enqueue([][]byte{{0x45, 1}, {0x45, 2, 2}, {0x45, 3, 3, 3}, {}, make([]byte, 101)}, 0)
	if got := b.dropped.Load(); got != 2 {
		t.Errorf("dropped = %d, want 2 (empty and over MTU)", got)
	}
	const offset = 16
	bufs := [][]byte{make([]byte, 200), make([]byte, 200)}
	sizes := make([]int, 2)
	n, err := b.Read(bufs, sizes, offset)
	if err != nil || n != 2 || sizes[0] != 2 || sizes[1] != 3 || bufs[0][offset+1] != 1 || bufs[1][offset+1] != 2 {
		t.Fatalf("Read = %d, %v, sizes %v", n, err, sizes)
	}
	n, err = b.Read(bufs, sizes, offset)
	if err != nil || n != 1 || sizes[0] != 4 || !bytes.Equal(bufs[0][offset:offset+4], []byte{0x45, 3, 3, 3}) {
		t.Fatalf("second Read = %d, %v, sizes %v", n, err, sizes)
	}
	if got := b.sent.Load(); got != 3 {
		t.Errorf("sent = %d, want 3", got)
	}

	done := make(chan error)
	go func() {
		_, err := b.Read(bufs, sizes, offset)
		done <- err
	}()
	b.Close()
	if err := <-done; !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read after Close: %v, want os.ErrClosed", err)
	}
	if _, ok := <-b.Events(); ok {
		t.Error("events channel open after Close")
	}
}

func TestBridgeWritePassesPacketsAfterOffset(t *testing.T) {
	var got [][]byte
	b := newBridge(100, func(bufs [][]byte) {
		for _, p := range bufs {
			got = append(got, append([]byte(nil), p...))
		}
	})
	defer b.Close()
	n, err := b.Write([][]byte{{9, 9, 0x45, 1}, {9, 9, 0x45, 2, 2}}, 2)
	if err != nil || n != 2 {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if len(got) != 2 || !bytes.Equal(got[0], []byte{0x45, 1}) || !bytes.Equal(got[1], []byte{0x45, 2, 2}) {
		t.Errorf("Receive got %v", got)
	}
	if b.received.Load() != 2 {
		t.Errorf("received = %d, want 2", b.received.Load())
	}
}

func TestSendDropsWhenQueueFullWithoutBlocking(t *testing.T) {
	b := newBridge(DefaultMTU, func([][]byte) {})
	defer b.Close()
	pkt := make([]byte, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range queueLen + 500 {
			b.enqueue([][]byte{pkt}, 0)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("enqueue blocked")
	}
	if got := b.dropped.Load(); got != 500 {
		t.Errorf("dropped = %d, want 500", got)
	}
	if got := b.allocated.Load(); got != queueLen {
		t.Errorf("allocated %d buffers, want %d", got, queueLen)
	}
}

func TestSendDoesNotAllocate(t *testing.T) {
	b := newBridge(DefaultMTU, func([][]byte) {})
	defer b.Close()
	batch := [][]byte{make([]byte, 1400), make([]byte, 60), make([]byte, 1000)}
	bufs := make([][]byte, 128)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	sizes := make([]int, len(bufs))
	cycle := func() {
		b.enqueue(batch, 0)
		if _, err := b.Read(bufs, sizes, 16); err != nil {
			t.Fatal(err)
		}
	}
	cycle() // allocate the buffers once
	if a := testing.AllocsPerRun(1000, cycle); a != 0 {
		t.Errorf("Send and Read allocate %v times per batch, want 0", a)
	}
}

func TestSendHandsBatchToWaitingReadWithOneCopy(t *testing.T) {
	b := newBridge(DefaultMTU, func([][]byte) {})
	defer b.Close()
	const offset = 16
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, offset+DefaultMTU)
	}
	sizes := make([]int, len(bufs))
	type read struct {
		n   int
		err error
	}
	done := make(chan read, 1)
	go func() {
		n, err := b.Read(bufs, sizes, offset)
		done <- read{n, err}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.mu.Lock()
		parked := b.parked
		b.mu.Unlock()
		if parked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Read never waited")
		}
		time.Sleep(time.Millisecond)
	}
	batch := [][]byte{{0, 0, 0x45, 1}, {0, 0, 0x45, 2, 2}, {0, 0, 0x45, 3, 3, 3}}
	if n := b.enqueue(batch, 2); n != 3 {
		t.Fatalf("enqueue took %d, want 3", n)
	}
	r := <-done
	if r.err != nil || r.n != 3 {
		t.Fatalf("Read = %d, %v; want the whole batch at once", r.n, r.err)
	}
	for i, p := range batch {
		if got := bufs[i][offset : offset+sizes[i]]; !bytes.Equal(got, p[2:]) {
			t.Errorf("packet %d = %x, want %x", i, got, p[2:])
		}
	}
	// Copied straight into Read's buffers: the queue made none of its own.
	if got := b.allocated.Load(); got != 0 {
		t.Errorf("the queue made %d buffers for packets a waiting Read took", got)
	}
}
