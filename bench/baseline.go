package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/warrenvpn/warren"
	"github.com/warrenvpn/warren/handshake"
)

// benchWGGoPair is the packet baseline: two wireguard-go devices on channel
// TUNs, peers of each other over UDP on 127.0.0.1; packets of size bytes
// from one TUN to the other.
func benchWGGoPair(b *testing.B, size int) {
	ipA, ipB := netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.9.0.2")
	a, portA, keyA := wgChannelDevice(b)
	bb, portB, keyB := wgChannelDevice(b)
	wgSetPeer(b, a.dev, keyB, portB, ipB)
	wgSetPeer(b, bb.dev, keyA, portA, ipA)
	arr := newArrivals()
	b.Cleanup(drainTUN(bb, arr))
	pkt := udpPacket(ipA, ipB, size)
	// The first packet starts the handshake; wait for it before timing.
	if _, _, err := pump(1, window, lossWait, func() error { a.tun.Outbound <- pkt; return nil }, arr); err != nil {
		b.Fatal(err)
	}
	runPump(b, pkt, func() error { a.tun.Outbound <- pkt; return nil }, arr)
}

// wgChannelDevice is a wireguard-go device on a channel TUN listening on a
// free UDP port, up, closed when b ends.
func wgChannelDevice(b *testing.B) (*stockPeer, int, warren.Key) {
	b.Helper()
	kp, err := warren.GenerateWGKeypair()
	if err != nil {
		b.Fatal(err)
	}
	ct := tuntest.NewChannelTUN()
	dev := device.NewDevice(ct.TUN(), conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	b.Cleanup(dev.Close)
	return &stockPeer{dev: dev, tun: ct}, wgUp(b, dev, kp.PrivateKey), kp.PublicKey
}

// wgUp sets dev's private key and a free listen port, brings it up and
// returns the port.
func wgUp(b *testing.B, dev *device.Device, priv warren.Key) int {
	b.Helper()
	if err := dev.IpcSet("private_key=" + hex.EncodeToString(priv[:]) + "\nlisten_port=0\n"); err != nil {
		b.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		b.Fatal(err)
	}
	cfg, err := dev.IpcGet()
	if err != nil {
		b.Fatal(err)
	}
	var port int
	for _, line := range strings.Split(cfg, "\n") {
		if _, err := fmt.Sscanf(line, "listen_port=%d", &port); err == nil {
			return port
		}
	}
	b.Fatalf("no listen_port in device config:\n%s", cfg)
	return 0
}

// wgSetPeer makes peer, listening on 127.0.0.1:port with tunnel address ip,
// a peer of dev.
func wgSetPeer(b *testing.B, dev *device.Device, peer warren.Key, port int, ip netip.Addr) {
	b.Helper()
	err := dev.IpcSet(fmt.Sprintf("public_key=%s\nendpoint=127.0.0.1:%d\nallowed_ip=%s\n",
		hex.EncodeToString(peer[:]), port, netip.PrefixFrom(ip, ip.BitLen())))
	if err != nil {
		b.Fatal(err)
	}
}

// benchChaCha is the cipher bound: ChaCha20-Poly1305 seal then open of size
// bytes on one core, with the nonce a counter as in every tunnel here.
func benchChaCha(b *testing.B, size int) {
	var key [chacha20poly1305.KeySize]byte
	rand.Read(key[:])
	aead, err := chacha20poly1305.New(key[:])
	if err != nil {
		b.Fatal(err)
	}
	pt := make([]byte, size)
	sealed := make([]byte, 0, size+aead.Overhead())
	opened := make([]byte, 0, size)
	var nonce [chacha20poly1305.NonceSize]byte
	b.SetBytes(int64(size))
	b.ReportAllocs()
	var n uint64
	for b.Loop() {
		n++
		nonce[4], nonce[5], nonce[6], nonce[7] = byte(n), byte(n>>8), byte(n>>16), byte(n>>24)
		sealed = aead.Seal(sealed[:0], nonce[:], pt, nil)
		if opened, err = aead.Open(opened[:0], nonce[:], sealed, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// benchNoiseSealOpen is Warren's stream session cipher (package handshake)
// sealing and opening size bytes, beside the ChaCha20-Poly1305 bound.
func benchNoiseSealOpen(b *testing.B, size int) {
	client, server := handshakePair(b)
	pt := make([]byte, size)
	sealed := make([]byte, 0, size+handshake.Overhead)
	opened := make([]byte, 0, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if sealed, err = client.Seal(sealed[:0], pt); err != nil {
			b.Fatal(err)
		}
		if opened, err = server.Open(opened[:0], sealed); err != nil {
			b.Fatal(err)
		}
	}
}

// handshakePair runs one Noise IK handshake and returns both sessions.
func handshakePair(b *testing.B) (client, server *handshake.Session) {
	b.Helper()
	ckp, skp := keypair(b), keypair(b)
	init, err := handshake.NewInitiator(ckp.PrivateKey, ckp.PublicKey, skp.PublicKey)
	if err != nil {
		b.Fatal(err)
	}
	msg1, err := init.WriteInit(handshake.ClientHello{Timestamp: time.Now().UnixNano()})
	if err != nil {
		b.Fatal(err)
	}
	resp, err := handshake.NewResponder(skp.PrivateKey, skp.PublicKey)
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := resp.ReadInit(msg1); err != nil {
		b.Fatal(err)
	}
	msg2, server, err := resp.WriteResp(handshake.ServerHello{MTU: 1420})
	if err != nil {
		b.Fatal(err)
	}
	if _, client, err = init.ReadResp(msg2); err != nil {
		b.Fatal(err)
	}
	return client, server
}

func keypair(b *testing.B) warren.Keypair {
	b.Helper()
	kp, err := warren.GenerateKeypair()
	if err != nil {
		b.Fatal(err)
	}
	return kp
}

// benchTLS is TLS 1.3 over loopback TCP with one record per packet: b.N
// writes of size bytes, timed until the reader has them all.
func benchTLS(b *testing.B, size int) {
	cert := selfSigned(b)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	benchStream(b, ln, size, func(ctx context.Context) (net.Conn, error) {
		d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}}
		c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			return nil, err
		}
		return c, c.(*tls.Conn).HandshakeContext(ctx)
	})
}

// selfSigned makes an ECDSA P-256 certificate for 127.0.0.1.
func selfSigned(b *testing.B) tls.Certificate {
	b.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "bench"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// benchLoopbackTCP is plain kernel TCP on loopback in the bulk shape: the
// ceiling of every TCP figure.
func benchLoopbackTCP(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	benchStream(b, ln, bulkChunk, func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", ln.Addr().String())
	})
}
