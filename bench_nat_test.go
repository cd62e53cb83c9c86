package warren

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	wgnetstack "golang.zx2c4.com/wireguard/tun/netstack"
)

// The bulk benchmarks share one shape, so their numbers compare: one
// connection, b.N writes of bulkChunk bytes, timed until the receiving end
// has read every byte (the sender half-closes; the sink reads to EOF). One
// op is one 64 KiB write; MB/s is the goodput of the TCP payload.
//
//	go test -run '^$' -bench 'NAT|Listen|WireGuardGo|Loopback' -benchmem .
//
// BenchmarkTCPClientThroughHubNAT, BenchmarkTCPClientDialToServerListen and
// BenchmarkWireGuardGoNetstackPair all run two gVisor stacks with an
// encrypted tunnel between them on loopback, so the last is the baseline for
// the first two: what a Go program gets from embedding wireguard-go with its
// netstack TUN. BenchmarkLoopbackTCP is the kernel's ceiling.
const bulkChunk = 64 << 10

// benchBulk measures b.N writes of bulkChunk bytes on a connection made by
// dial to ln, counting until the sink behind ln has received them all. It
// closes the connection and ln's accepted side before returning; ln itself
// belongs to the caller.
func benchBulk(b *testing.B, ln net.Listener, dial func(ctx context.Context) (net.Conn, error)) {
	b.Helper()
	type result struct {
		n   int64
		err error
	}
	sunk := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			sunk <- result{0, err}
			return
		}
		defer c.Close()
		buf := make([]byte, bulkChunk)
		var n int64
		for {
			m, err := c.Read(buf)
			n += int64(m)
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				sunk <- result{n, err}
				return
			}
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, err := dial(ctx)
	cancel()
	if err != nil {
		ln.Close() // ends the sink's Accept
		<-sunk
		b.Fatalf("dial: %v", err)
	}
	defer c.Close()
	hc, ok := c.(interface{ CloseWrite() error })
	if !ok {
		b.Fatalf("%T has no CloseWrite", c)
	}

	buf := make([]byte, bulkChunk)
	rand.Read(buf)
	b.SetBytes(bulkChunk)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatalf("write: %v", err)
		}
	}
	if err := hc.CloseWrite(); err != nil {
		b.Fatalf("close write: %v", err)
	}
	var r result
	select {
	case r = <-sunk:
	case <-time.After(time.Minute):
		c.Close()
		r = <-sunk
		b.Fatalf("sink still reading after a minute (%d of %d bytes)", r.n, int64(b.N)*bulkChunk)
	}
	b.StopTimer()
	if r.err != nil || r.n != int64(b.N)*bulkChunk {
		b.Fatalf("sink got %d bytes, want %d: %v", r.n, int64(b.N)*bulkChunk, r.err)
	}
}

// benchClient connects a netstack-mode client over one transport.
func benchClient(b *testing.B, s *Server, tr ClientTransport) *Client {
	b.Helper()
	bundle, err := s.CreateClient(context.Background(), ClientSpec{ClientID: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	cfg := bundle.Config
	cfg.Transport = tr
	c, err := NewClient(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx); err != nil {
		b.Fatal(err)
	}
	return c
}

var benchTransports = []ClientTransport{ClientWebSocket, ClientQUIC}

// BenchmarkTCPClientThroughHubNAT: a netstack-mode Client sends to a TCP sink
// on the hub's loopback through the tunnel (WebSocket/TLS or QUIC datagrams)
// and the hub's userspace NAT.
func BenchmarkTCPClientThroughHubNAT(b *testing.B) {
	for _, tr := range benchTransports {
		b.Run(string(tr), func(b *testing.B) {
			s := newNATHub(b, nil)
			c := benchClient(b, s, tr)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			benchBulk(b, ln, func(ctx context.Context) (net.Conn, error) {
				return c.Dial(ctx, "tcp", ln.Addr().String())
			})
		})
	}
}

// BenchmarkTCPClientDialToServerListen: Client.Dial to a Server.Listen
// listener on the hub's tunnel address; no host socket after the tunnel.
func BenchmarkTCPClientDialToServerListen(b *testing.B) {
	for _, tr := range benchTransports {
		b.Run(string(tr), func(b *testing.B) {
			s := newNATHub(b, nil)
			c := benchClient(b, s, tr)
			ln, err := s.Listen("tcp", ":9000")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			addr := netip.AddrPortFrom(s.HubIP(), 9000).String()
			benchBulk(b, ln, func(ctx context.Context) (net.Conn, error) {
				return c.Dial(ctx, "tcp", addr)
			})
		})
	}
}

// BenchmarkWireGuardGoNetstackPair is the baseline: two wireguard-go devices,
// each on its own tun/netstack stack, peers of each other over UDP on
// 127.0.0.1; one stack dials the other's listener. (conn.NewDefaultBind binds
// its UDP port on every address; the peers' endpoints are on 127.0.0.1.)
func BenchmarkWireGuardGoNetstackPair(b *testing.B) {
	ipA, ipB := netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.9.0.2")
	netA, devA, portA, keyA := wgNetstackDevice(b, ipA)
	defer devA.Close()
	netB, devB, portB, keyB := wgNetstackDevice(b, ipB)
	defer devB.Close()
	wgSetPeer(b, devA, keyB, portB, ipB)
	wgSetPeer(b, devB, keyA, portA, ipA)

	ln, err := netB.ListenTCPAddrPort(netip.AddrPortFrom(ipB, 9000))
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	benchBulk(b, ln, func(ctx context.Context) (net.Conn, error) {
		return netA.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(ipB, 9000))
	})
}

// wgNetstackDevice makes a wireguard-go device on a netstack TUN with address
// ip and MTU 1420 (Warren's default), listening on a free UDP port. It
// returns the stack, the device (up), its port and its public key.
func wgNetstackDevice(b *testing.B, ip netip.Addr) (*wgnetstack.Net, *device.Device, int, Key) {
	b.Helper()
	kp, err := GenerateWGKeypair()
	if err != nil {
		b.Fatal(err)
	}
	tun, tnet, err := wgnetstack.CreateNetTUN([]netip.Addr{ip}, nil, DefaultMTU)
	if err != nil {
		b.Fatal(err)
	}
	dev := device.NewDevice(tun, conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	fail := func(err error) {
		dev.Close()
		b.Fatal(err)
	}
	if err := dev.IpcSet("private_key=" + hex.EncodeToString(kp.PrivateKey[:]) + "\nlisten_port=0\n"); err != nil {
		fail(err)
	}
	if err := dev.Up(); err != nil {
		fail(err)
	}
	cfg, err := dev.IpcGet()
	if err != nil {
		fail(err)
	}
	port := 0
	sc := bufio.NewScanner(strings.NewReader(cfg))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "listen_port="); ok {
			port, _ = strconv.Atoi(v)
		}
	}
	if port == 0 {
		fail(fmt.Errorf("no listen_port in device config:\n%s", cfg))
	}
	return tnet, dev, port, kp.PublicKey
}

// wgSetPeer makes peer, listening on 127.0.0.1:port with tunnel address ip,
// a peer of dev.
func wgSetPeer(b *testing.B, dev *device.Device, peer Key, port int, ip netip.Addr) {
	b.Helper()
	err := dev.IpcSet(fmt.Sprintf("public_key=%s\nendpoint=127.0.0.1:%d\nallowed_ip=%s\n",
		hex.EncodeToString(peer[:]), port, netip.PrefixFrom(ip, ip.BitLen())))
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkLoopbackTCP is plain kernel TCP on loopback, the same shape.
func BenchmarkLoopbackTCP(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	benchBulk(b, ln, func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", ln.Addr().String())
	})
}
