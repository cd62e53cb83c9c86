package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	wgnetstack "golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/warrenvpn/warren"
)

// bulkChunk is one op of the TCP cases: a 64 KiB write. The TCP cases share
// the shape of the root package's bench_nat_test.go, so their numbers
// compare: one connection, b.N writes, timed until the receiving end has
// read every byte (the sender half-closes; the sink reads to EOF).
const bulkChunk = 64 << 10

// benchStream measures b.N writes of chunk bytes on a connection made by
// dial to ln, counting until the sink behind ln has received them all.
func benchStream(b *testing.B, ln net.Listener, chunk int, dial func(ctx context.Context) (net.Conn, error)) {
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
		buf := make([]byte, 64<<10)
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

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
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

	buf := make([]byte, chunk)
	rand.Read(buf)
	b.SetBytes(int64(chunk))
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
	case <-time.After(2 * time.Minute):
		c.Close()
		r = <-sunk
		b.Fatalf("sink still reading after two minutes (%d of %d bytes)", r.n, int64(b.N)*int64(chunk))
	}
	b.StopTimer()
	if r.err != nil || r.n != int64(b.N)*int64(chunk) {
		b.Fatalf("sink got %d bytes, want %d: %v", r.n, int64(b.N)*int64(chunk), r.err)
	}
}

// benchTCP: a netstack-mode Client over tr sends to a TCP sink, either a
// Server.Listen listener on the hub's tunnel address or (nat) a socket on
// the hub's 127.0.0.1 through its userspace NAT.
func benchTCP(b *testing.B, tr string, nat bool) {
	s := newHub(b, hubOptions{})
	c, _ := connectClient(b, s, newBundle(b, s, "bench"), tr, nil)
	var ln net.Listener
	var addr string
	var err error
	if nat {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		if err == nil {
			addr = ln.Addr().String()
		}
	} else {
		ln, err = s.Listen("tcp", ":9000")
		addr = netip.AddrPortFrom(s.HubIP(), 9000).String()
	}
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	benchStream(b, ln, bulkChunk, func(ctx context.Context) (net.Conn, error) {
		return c.Dial(ctx, "tcp", addr)
	})
}

// benchWGGoNetstackPair is the TCP baseline: two wireguard-go devices, each
// on its own tun/netstack stack, peers over UDP on 127.0.0.1; one stack
// dials the other's listener. It is what a Go program gets from embedding
// wireguard-go with its netstack TUN.
func benchWGGoNetstackPair(b *testing.B) {
	ipA, ipB := netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.9.0.2")
	netA, devA, portA, keyA := wgNetstackDevice(b, ipA)
	netB, devB, portB, keyB := wgNetstackDevice(b, ipB)
	wgSetPeer(b, devA, keyB, portB, ipB)
	wgSetPeer(b, devB, keyA, portA, ipA)
	ln, err := netB.ListenTCPAddrPort(netip.AddrPortFrom(ipB, 9000))
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	benchStream(b, ln, bulkChunk, func(ctx context.Context) (net.Conn, error) {
		return netA.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(ipB, 9000))
	})
}

// wgNetstackDevice is a wireguard-go device on a netstack TUN with address
// ip and Warren's default MTU, up on a free UDP port, closed when b ends.
func wgNetstackDevice(b *testing.B, ip netip.Addr) (*wgnetstack.Net, *device.Device, int, warren.Key) {
	b.Helper()
	kp, err := warren.GenerateWGKeypair()
	if err != nil {
		b.Fatal(err)
	}
	tun, tnet, err := wgnetstack.CreateNetTUN([]netip.Addr{ip}, nil, warren.DefaultMTU)
	if err != nil {
		b.Fatal(err)
	}
	dev := device.NewDevice(tun, conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	b.Cleanup(dev.Close)
	return tnet, dev, wgUp(b, dev, kp.PrivateKey), kp.PublicKey
}
