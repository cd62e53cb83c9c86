package quic

import (
	"context"
	"testing"

	"github.com/warrenvpn/warren/codec"
)

// BenchmarkDatagramThroughput sends 1200-byte datagrams from client to server
// over loopback, the shape of the tunnel's IP packets, while the server
// receives them. It reports the fraction that arrived as delivered/op.
func BenchmarkDatagramThroughput(b *testing.B) {
	const size = 1200
	l := listen(b, ListenConfig{})
	client, server := connect(b, l, frame(b, codec.HandshakeInit, nil))
	if _, err := server.ReadMessage(); err != nil {
		b.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	received := make(chan int, 1)
	go func() {
		n := 0
		for {
			if _, err := server.ReceiveDatagram(ctx); err != nil {
				received <- n
				return
			}
			n++
		}
	}()

	p := make([]byte, size)
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := client.SendDatagram(p); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	// Let the last datagrams in flight arrive before counting.
	if err := client.WriteMessage(frame(b, codec.Keepalive, nil)); err != nil {
		b.Fatal(err)
	}
	if _, err := server.ReadMessage(); err != nil {
		b.Fatal(err)
	}
	cancel()
	b.ReportMetric(float64(<-received)/float64(b.N), "delivered/op")
}

// BenchmarkStreamThroughput writes frames holding a 1200-byte payload from
// client to server on the stream, the path of a packet that does not fit in
// a datagram, while the server reads them.
func BenchmarkStreamThroughput(b *testing.B) {
	l := listen(b, ListenConfig{})
	client, server := connect(b, l, frame(b, codec.HandshakeInit, nil))
	if _, err := server.ReadMessage(); err != nil {
		b.Fatal(err)
	}
	msg := frame(b, codec.IPPacket, make([]byte, 1200))

	done := make(chan error, 1)
	go func() {
		for range b.N {
			if _, err := server.ReadMessage(); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()

	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := client.WriteMessage(msg); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
