package wg

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/warrenvpn/warren/internal/packet"
)

// benchWindow is how many packets the benchmarks keep in flight: enough to
// fill batches, few enough that loopback UDP socket buffers do not overflow.
const benchWindow = 256

// bulkPacket is a 1400-byte IPv4/UDP packet from the client to the hub.
func bulkPacket() []byte {
	return packet.BuildUDP(netip.AddrPortFrom(clientIP, 9), netip.AddrPortFrom(hubIP, 9), make([]byte, 1400-28))
}

// warmUp sends pkt until c counts one arrival: the first packets may be lost
// while the handshake completes.
func warmUp(b *testing.B, send func([][]byte), c *counter, pkt []byte) {
	b.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.n.Load() == 0 {
		if time.Now().After(deadline) {
			b.Fatal("no handshake")
		}
		send([][]byte{pkt})
		select {
		case <-c.arrived:
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// BenchmarkDeviceToDevice moves 1400-byte packets from one Device (a client)
// through WireGuard on loopback into another (the hub): Send, the bridge, wireguard-go's
// encryption, UDP, decryption, the bridge, Receive. One op is one packet.
func BenchmarkDeviceToDevice(b *testing.B) {
	c := newCounter()
	_, client, _ := hubAndClient(b, Config{Receive: c.receive}, Config{Receive: func([][]byte) {}})
	pkt := bulkPacket()
	warmUp(b, sendFunc(client), c, pkt)

	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	b.ResetTimer()
	got := exchange(sendFunc(client), &c.n, c.arrived, pkt, b.N, benchWindow)
	b.StopTimer()
	b.ReportMetric(float64(b.N-got)/float64(b.N), "lost/op")
}

// BenchmarkPlainWireGuardGo is the baseline: two stock wireguard-go devices,
// each on wireguard-go's own channel TUN (tuntest.ChannelTUN), moving the
// same packets the same way: A, the client, to B, the hub.
func BenchmarkPlainWireGuardGo(b *testing.B) {
	keyA, keyB := newKeypair(b), newKeypair(b)
	tunA, tunB := tuntest.NewChannelTUN(), tuntest.NewChannelTUN()
	log := device.NewLogger(device.LogLevelSilent, "")
	devA := device.NewDevice(tunA.TUN(), conn.NewDefaultBind(), log)
	devB := device.NewDevice(tunB.TUN(), conn.NewDefaultBind(), log)
	defer devA.Close()
	defer devB.Close()
	if err := devB.IpcSet(fmt.Sprintf("private_key=%x\nlisten_port=0\npublic_key=%x\nallowed_ip=10.8.0.2/32\n", keyB.priv, keyA.pub)); err != nil {
		b.Fatal(err)
	}
	if err := devB.Up(); err != nil {
		b.Fatal(err)
	}
	ipc, err := devB.IpcGet()
	if err != nil {
		b.Fatal(err)
	}
	var portB uint16
	for _, line := range strings.Split(ipc, "\n") {
		fmt.Sscanf(line, "listen_port=%d", &portB)
	}
	err = devA.IpcSet(fmt.Sprintf("private_key=%x\nlisten_port=0\npublic_key=%x\nallowed_ip=0.0.0.0/0\nendpoint=127.0.0.1:%d\n", keyA.priv, keyB.pub, portB))
	if err != nil {
		b.Fatal(err)
	}
	if err := devA.Up(); err != nil {
		b.Fatal(err)
	}

	c := newCounter()
	done := make(chan struct{})
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for {
			select {
			case p := <-tunB.Inbound:
				c.receive([][]byte{p})
			case <-done:
				return
			}
		}
	}()
	defer func() { close(done); <-drained }()
	send := func(bufs [][]byte) {
		for _, p := range bufs {
			tunA.Outbound <- p
		}
	}
	pkt := bulkPacket()
	warmUp(b, send, c, pkt)

	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	b.ResetTimer()
	got := exchange(send, &c.n, c.arrived, pkt, b.N, benchWindow)
	b.StopTimer()
	b.ReportMetric(float64(b.N-got)/float64(b.N), "lost/op")
}
