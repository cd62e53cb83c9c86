package quic

import (
	"maps"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/warrenvpn/warren/codec"
)

// udpRelay forwards UDP between one client and a server, recording the size
// of every packet from the client. A socket without UDP_GRO receives a GSO
// batch as the packets it was cut into, so the sizes are those on the wire.
type udpRelay struct {
	front, back *net.UDPConn
	wg          sync.WaitGroup

	mu     sync.Mutex
	client netip.AddrPort
	sizes  map[int]int // client packets by size
}

func newUDPRelay(t *testing.T, server net.Addr) *udpRelay {
	t.Helper()
	front, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.DialUDP("udp4", nil, server.(*net.UDPAddr))
	if err != nil {
		front.Close()
		t.Fatal(err)
	}
	r := &udpRelay{front: front, back: back, sizes: make(map[int]int)}
	r.wg.Go(func() {
		b := make([]byte, 1<<16)
		for {
			n, from, err := front.ReadFromUDPAddrPort(b)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.client = from
			r.sizes[n]++
			r.mu.Unlock()
			_, _ = back.Write(b[:n])
		}
	})
	r.wg.Go(func() {
		b := make([]byte, 1<<16)
		for {
			n, err := back.Read(b)
			if err != nil {
				return
			}
			r.mu.Lock()
			to := r.client
			r.mu.Unlock()
			_, _ = front.WriteToUDPAddrPort(b[:n], to)
		}
	})
	t.Cleanup(func() {
		front.Close()
		back.Close()
		r.wg.Wait()
	})
	return r
}

// TestFullDatagramsFillTheirPackets: a datagram of exactly MaxDatagramSize
// bytes goes in a QUIC packet of exactly the path MTU, the size quic-go
// needs to batch packets into one GSO sendmsg (PadDatagrams).
func TestFullDatagramsFillTheirPackets(t *testing.T) {
	l := listen(t, ListenConfig{})
	r := newUDPRelay(t, l.Addr())
	ctx := ctxTimeout(t, 20*time.Second)
	client, err := Dial(ctx, r.front.LocalAddr().String(), DialConfig{ServerCertHash: testPin()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if err := client.WriteMessage(frame(t, codec.HandshakeInit, nil)); err != nil {
		t.Fatal(err)
	}
	server, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	if _, err := server.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	const n = 20
	for attempt := 0; ; attempt++ {
		room := client.MaxDatagramSize()
		r.mu.Lock()
		clear(r.sizes)
		r.mu.Unlock()
		b := make([]byte, room)
		for range n {
			if err := client.SendDatagram(b); err != nil {
				t.Fatal(err)
			}
		}
		for range n {
			if _, err := server.ReceiveDatagram(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if client.MaxDatagramSize() != room && attempt < 10 {
			continue // path MTU discovery moved the room meanwhile
		}
		r.mu.Lock()
		sizes := maps.Clone(r.sizes)
		r.mu.Unlock()
		// quic-go's room is the packet size less 37 bytes; MaxDatagramSize
		// is lengthSlack less than that.
		mtu := room + lengthSlack + 37
		fullSize, short := 0, 0
		for size, count := range sizes {
			switch {
			case size == mtu:
				fullSize += count
			case size > room && size < mtu:
				short += count
			}
		}
		t.Logf("room %d: client packets by size %v", room, sizes)
		if fullSize < n || short > 0 {
			t.Errorf("%d packets of %d bytes (the path MTU) and %d shorter ones carried %d datagrams of %d bytes; want every one full size", fullSize, mtu, short, n, room)
		}
		return
	}
}
