package bench

import (
	"context"
	"crypto/rand"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/curve25519"

	"github.com/warrenvpn/warren"
	"github.com/warrenvpn/warren/handshake"
)

// benchX25519 is the handshake bound: one X25519 scalar multiplication per
// op, on one core.
func benchX25519(b *testing.B) {
	var scalar, point [32]byte
	rand.Read(scalar[:])
	copy(point[:], curve25519.Basepoint)
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		out, err := curve25519.X25519(scalar[:], point[:])
		if err != nil {
			b.Fatal(err)
		}
		copy(point[:], out)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
}

// benchResponder is the hub's half of the Noise IK handshake (package
// handshake) on one core: read message 1, write message 2. The messages 1
// are made before the timer starts.
func benchResponder(b *testing.B) {
	ckp, skp := keypair(b), keypair(b)
	msgs := make([][]byte, b.N)
	for i := range msgs {
		init, err := handshake.NewInitiator(ckp.PrivateKey, ckp.PublicKey, skp.PublicKey)
		if err != nil {
			b.Fatal(err)
		}
		if msgs[i], err = init.WriteInit(handshake.ClientHello{Timestamp: int64(i + 1), Version: "bench"}); err != nil {
			b.Fatal(err)
		}
	}
	hello := handshake.ServerHello{MTU: 1420, KeepaliveSeconds: 25}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		r, err := handshake.NewResponder(skp.PrivateKey, skp.PublicKey)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := r.ReadInit(msgs[i]); err != nil {
			b.Fatal(err)
		}
		if _, _, err := r.WriteResp(hello); err != nil {
			b.Fatal(err)
		}
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "handshakes/s")
}

// connectors is how many clients connect at once in benchConnect.
const connectors = 8

// benchConnect: whole connects to one hub over tr (transport, handshake,
// session set-up), eight at a time, each by a client registered before the
// timer starts. Client and hub share the machine, so this is a lower bound
// on what the hub alone manages.
func benchConnect(b *testing.B, tr string) {
	s := newHub(b, hubOptions{engine: newEngine(), subnet: "10.0.0.0/8"})
	bundles := make([]*warren.ClientBundle, b.N)
	for i := range bundles {
		bundles[i] = newBundle(b, s, "c"+strconv.Itoa(i))
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	next := make(chan *warren.ClientBundle)
	clients := make(chan *warren.Client, b.N)
	errs := make(chan error, connectors)
	for range connectors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for bundle := range next {
				c, err := warren.NewClient(clientConfig(s, bundle, tr, newEngine()))
				if err != nil {
					errs <- err
					return
				}
				track(c)
				clients <- c
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err = c.Connect(ctx)
				cancel()
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var failed error
feed:
	for _, bundle := range bundles {
		select {
		case next <- bundle:
		case failed = <-errs:
			break feed
		}
	}
	close(next)
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	close(clients)
	for c := range clients {
		c.Close()
	}
	if failed == nil {
		select {
		case failed = <-errs:
		default:
		}
	}
	if failed != nil {
		b.Fatal(failed)
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "handshakes/s")
}
