package handshake_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/curve25519"

	"github.com/warrenvpn/warren/handshake"
)

type keypair struct{ priv, pub [32]byte }

func newKeypair(tb testing.TB) keypair {
	tb.Helper()
	var k keypair
	if _, err := rand.Read(k.priv[:]); err != nil {
		tb.Fatal(err)
	}
	pub, err := curve25519.X25519(k.priv[:], curve25519.Basepoint)
	if err != nil {
		tb.Fatal(err)
	}
	copy(k.pub[:], pub)
	return k
}

var (
	testClientHello = handshake.ClientHello{
		Timestamp: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC).UnixNano(),
		Version:   "v1.2.3",
		Tags:      []string{"laptop", "eu"},
	}
	testServerHello = handshake.ServerHello{
		AssignedPrefix:   netip.MustParsePrefix("10.8.0.2/24"),
		Gateway:          netip.MustParseAddr("10.8.0.1"),
		DNS:              []netip.Addr{netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("2606:4700:4700::1111")},
		MTU:              1280,
		KeepaliveSeconds: 25,
	}
)

// handshakeResult is what both sides hold after a successful handshake.
type handshakeResult struct {
	client, server *handshake.Session
	peerStatic     [32]byte
	clientHello    handshake.ClientHello
	serverHello    handshake.ServerHello
}

func doHandshake(tb testing.TB, client, server keypair) handshakeResult {
	tb.Helper()
	ini, err := handshake.NewInitiator(client.priv, client.pub, server.pub)
	if err != nil {
		tb.Fatal(err)
	}
	msg1, err := ini.WriteInit(testClientHello)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := handshake.NewResponder(server.priv, server.pub)
	if err != nil {
		tb.Fatal(err)
	}
	var r handshakeResult
	r.peerStatic, r.clientHello, err = resp.ReadInit(msg1)
	if err != nil {
		tb.Fatal(err)
	}
	msg2, ss, err := resp.WriteResp(testServerHello)
	if err != nil {
		tb.Fatal(err)
	}
	r.serverHello, r.client, err = ini.ReadResp(msg2)
	if err != nil {
		tb.Fatal(err)
	}
	r.server = ss
	return r
}

func TestHandshakeRoundTrip(t *testing.T) {
	client, server := newKeypair(t), newKeypair(t)
	r := doHandshake(t, client, server)
	if r.peerStatic != client.pub {
		t.Errorf("responder saw client key %x, want %x", r.peerStatic, client.pub)
	}
	if !reflect.DeepEqual(r.clientHello, testClientHello) {
		t.Errorf("client hello = %+v, want %+v", r.clientHello, testClientHello)
	}
	if !reflect.DeepEqual(r.serverHello, testServerHello) {
		t.Errorf("server hello = %+v, want %+v", r.serverHello, testServerHello)
	}
	if cb := r.client.ChannelBinding(); len(cb) != 32 || !bytes.Equal(cb, r.server.ChannelBinding()) {
		t.Errorf("channel bindings differ: %x vs %x", cb, r.server.ChannelBinding())
	}

	for i := 0; i < 10; i++ {
		msg := []byte("packet from client")
		ct, err := r.client.Seal(nil, msg)
		if err != nil || len(ct) != len(msg)+handshake.Overhead {
			t.Fatalf("client Seal: %d bytes, %v", len(ct), err)
		}
		pt, err := r.server.Open(nil, ct)
		if err != nil || !bytes.Equal(pt, msg) {
			t.Fatalf("server Open message %d: %q, %v", i, pt, err)
		}
		msg = []byte("reply from server")
		ct, _ = r.server.Seal(nil, msg)
		pt, err = r.client.Open(ct[:0], ct) // in place
		if err != nil || !bytes.Equal(pt, msg) {
			t.Fatalf("client Open message %d: %q, %v", i, pt, err)
		}
	}
}

func TestHelloJSONRoundTrip(t *testing.T) {
	b, err := json.Marshal(testServerHello)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"assignedPrefix":"10.8.0.2/24","gateway":"10.8.0.1","dns":["1.1.1.1","2606:4700:4700::1111"],"mtu":1280,"keepaliveSeconds":25}`
	if string(b) != want {
		t.Fatalf("ServerHello JSON = %s\nwant %s", b, want)
	}
	var sh handshake.ServerHello
	if err := json.Unmarshal(b, &sh); err != nil || !reflect.DeepEqual(sh, testServerHello) {
		t.Fatalf("ServerHello round trip = %+v, %v", sh, err)
	}
	var ch handshake.ClientHello
	b, _ = json.Marshal(testClientHello)
	if err := json.Unmarshal(b, &ch); err != nil || !reflect.DeepEqual(ch, testClientHello) {
		t.Fatalf("ClientHello round trip = %+v, %v", ch, err)
	}
}

func TestConstructorsRejectBadKeys(t *testing.T) {
	k, other := newKeypair(t), newKeypair(t)
	if _, err := handshake.NewInitiator(k.priv, other.pub, other.pub); err == nil {
		t.Error("NewInitiator accepted a public key of another private key")
	}
	if _, err := handshake.NewInitiator([32]byte{}, k.pub, other.pub); err == nil {
		t.Error("NewInitiator accepted a zero private key")
	}
	if _, err := handshake.NewInitiator(k.priv, k.pub, [32]byte{}); err == nil {
		t.Error("NewInitiator accepted a zero server key")
	}
	if _, err := handshake.NewResponder(k.priv, k.pub); err != nil {
		t.Fatalf("NewResponder refused a good key pair: %v", err)
	}
	// The good pair is remembered; a bad public key must still be caught.
	if _, err := handshake.NewResponder(k.priv, other.pub); err == nil {
		t.Error("NewResponder accepted a public key of another private key")
	}
}

func TestWrongServerKeyFailsWithErrDecrypt(t *testing.T) {
	client, server, impostor := newKeypair(t), newKeypair(t), newKeypair(t)
	ini, _ := handshake.NewInitiator(client.priv, client.pub, impostor.pub)
	msg1, err := ini.WriteInit(testClientHello)
	if err != nil {
		t.Fatal(err)
	}
	resp, _ := handshake.NewResponder(server.priv, server.pub)
	if _, _, err := resp.ReadInit(msg1); !errors.Is(err, handshake.ErrDecrypt) {
		t.Fatalf("ReadInit of a message for another server key: %v, want ErrDecrypt", err)
	}
	if _, _, err := resp.WriteResp(testServerHello); err == nil {
		t.Fatal("WriteResp after a failed ReadInit succeeded")
	}
}

func TestResponseFromWrongServerFailsWithErrDecrypt(t *testing.T) {
	client, server, impostor := newKeypair(t), newKeypair(t), newKeypair(t)
	// The impostor answers a message 1 meant for server with its own keys:
	// it cannot even read message 1, so forge message 2 by running a
	// handshake addressed to itself and splicing its answer in.
	ini, _ := handshake.NewInitiator(client.priv, client.pub, server.pub)
	if _, err := ini.WriteInit(testClientHello); err != nil {
		t.Fatal(err)
	}
	other, _ := handshake.NewInitiator(client.priv, client.pub, impostor.pub)
	msg1, _ := other.WriteInit(testClientHello)
	resp, _ := handshake.NewResponder(impostor.priv, impostor.pub)
	if _, _, err := resp.ReadInit(msg1); err != nil {
		t.Fatal(err)
	}
	msg2, _, _ := resp.WriteResp(testServerHello)
	if _, _, err := ini.ReadResp(msg2); !errors.Is(err, handshake.ErrDecrypt) {
		t.Fatalf("ReadResp of another server's answer: %v, want ErrDecrypt", err)
	}
}

func TestReplayedInitRejectedByTimestampGuard(t *testing.T) {
	client, server := newKeypair(t), newKeypair(t)
	ini, _ := handshake.NewInitiator(client.priv, client.pub, server.pub)
	msg1, _ := ini.WriteInit(testClientHello)

	var guard handshake.TimestampGuard
	for attempt := 0; attempt < 2; attempt++ {
		resp, _ := handshake.NewResponder(server.priv, server.pub)
		key, hello, err := resp.ReadInit(bytes.Clone(msg1))
		if err != nil {
			t.Fatalf("attempt %d: ReadInit: %v", attempt, err)
		}
		err = guard.Check(key, hello.Timestamp)
		switch {
		case attempt == 0 && err != nil:
			t.Fatalf("first message 1 refused: %v", err)
		case attempt == 1 && !errors.Is(err, handshake.ErrReplay):
			t.Fatalf("replayed message 1: Check = %v, want ErrReplay", err)
		}
	}
}

func TestTimestampGuard(t *testing.T) {
	var g handshake.TimestampGuard
	a, b := [32]byte{1}, [32]byte{2}
	steps := []struct {
		key     [32]byte
		ts      int64
		replay  bool
		comment string
	}{
		{a, 100, false, "first from a"},
		{a, 100, true, "same timestamp"},
		{a, 99, true, "older"},
		{b, 50, false, "keys are independent"},
		{a, 101, false, "newer"},
		{a, 100, true, "older than the newest"},
	}
	for i, s := range steps {
		err := g.Check(s.key, s.ts)
		if errors.Is(err, handshake.ErrReplay) != s.replay || (err != nil && !s.replay) {
			t.Fatalf("step %d (%s): Check = %v, want replay %v", i, s.comment, err, s.replay)
		}
	}
	g.Forget(a)
	if err := g.Check(a, 1); err != nil {
		t.Fatalf("after Forget: %v", err)
	}
}

func TestTimestampGuardConcurrent(t *testing.T) {
	var g handshake.TimestampGuard
	var wg sync.WaitGroup
	accepted := make([]int, 8)
	for w := range accepted {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ts := int64(0); ts < 1000; ts++ {
				if g.Check([32]byte{byte(ts % 4)}, ts) == nil {
					accepted[w]++
				}
			}
		}()
	}
	wg.Wait()
	total := 0
	for _, n := range accepted {
		total += n
	}
	if total < 1000 {
		t.Fatalf("only %d timestamps accepted; each of the 1000 must be accepted at least once", total)
	}
}

func TestTamperedCiphertextFailsOpen(t *testing.T) {
	r := doHandshake(t, newKeypair(t), newKeypair(t))
	ct, _ := r.client.Seal(nil, []byte("hello"))
	for i := range ct {
		bad := bytes.Clone(ct)
		bad[i] ^= 0x40
		if _, err := r.server.Open(nil, bad); !errors.Is(err, handshake.ErrDecrypt) {
			t.Fatalf("Open with byte %d flipped: %v, want ErrDecrypt", i, err)
		}
	}
	if _, err := r.server.Open(nil, ct[:handshake.Overhead-1]); !errors.Is(err, handshake.ErrDecrypt) {
		t.Fatalf("Open of a short message: %v, want ErrDecrypt", err)
	}
	// Failures do not advance the counter: the genuine message still opens.
	if pt, err := r.server.Open(nil, ct); err != nil || string(pt) != "hello" {
		t.Fatalf("Open after failures: %q, %v", pt, err)
	}
	// A replayed stream message fails: its counter has passed.
	if _, err := r.server.Open(nil, ct); !errors.Is(err, handshake.ErrDecrypt) {
		t.Fatalf("Open of a replayed message: %v, want ErrDecrypt", err)
	}
}

func TestTamperedHandshakeMessages(t *testing.T) {
	client, server := newKeypair(t), newKeypair(t)
	ini, _ := handshake.NewInitiator(client.priv, client.pub, server.pub)
	msg1, _ := ini.WriteInit(testClientHello)
	// Every byte after the ephemeral key is authenticated.
	for _, i := range []int{32, 70, len(msg1) - 1} {
		bad := bytes.Clone(msg1)
		bad[i] ^= 1
		resp, _ := handshake.NewResponder(server.priv, server.pub)
		if _, _, err := resp.ReadInit(bad); !errors.Is(err, handshake.ErrDecrypt) {
			t.Errorf("ReadInit with byte %d flipped: %v, want ErrDecrypt", i, err)
		}
	}
	for _, n := range []int{0, 1, 95} {
		resp, _ := handshake.NewResponder(server.priv, server.pub)
		if _, _, err := resp.ReadInit(msg1[:min(n, len(msg1))]); !errors.Is(err, handshake.ErrMalformed) {
			t.Errorf("ReadInit of %d bytes: %v, want ErrMalformed", n, err)
		}
	}
	resp, _ := handshake.NewResponder(server.priv, server.pub)
	if _, _, err := resp.ReadInit(make([]byte, 8192)); !errors.Is(err, handshake.ErrMalformed) {
		t.Errorf("ReadInit of 8 KiB: %v, want ErrMalformed", err)
	}
	if _, _, err := ini.ReadResp([]byte("short")); !errors.Is(err, handshake.ErrMalformed) {
		t.Errorf("ReadResp of 5 bytes: %v, want ErrMalformed", err)
	}
}

func TestOversizedHelloRefused(t *testing.T) {
	client, server := newKeypair(t), newKeypair(t)
	ini, _ := handshake.NewInitiator(client.priv, client.pub, server.pub)
	hello := testClientHello
	hello.Tags = []string{string(bytes.Repeat([]byte("x"), 5000))}
	if _, err := ini.WriteInit(hello); err == nil {
		t.Fatal("WriteInit sent a 5 KB hello")
	}
}

func TestMethodsOutOfOrder(t *testing.T) {
	client, server := newKeypair(t), newKeypair(t)
	ini, _ := handshake.NewInitiator(client.priv, client.pub, server.pub)
	if _, _, err := ini.ReadResp(make([]byte, 64)); err == nil {
		t.Error("ReadResp before WriteInit succeeded")
	}
	resp, _ := handshake.NewResponder(server.priv, server.pub)
	if _, _, err := resp.WriteResp(testServerHello); err == nil {
		t.Error("WriteResp before ReadInit succeeded")
	}
	if _, err := ini.WriteInit(testClientHello); err != nil {
		t.Fatal(err)
	}
	if _, err := ini.WriteInit(testClientHello); err == nil {
		t.Error("second WriteInit succeeded")
	}
}

func TestSealOpenConcurrentDirections(t *testing.T) {
	r := doHandshake(t, newKeypair(t), newKeypair(t))
	const n = 1000
	c2s := make(chan []byte, n)
	s2c := make(chan []byte, n)
	var wg sync.WaitGroup
	pump := func(from, to *handshake.Session, out chan<- []byte, in <-chan []byte) {
		defer wg.Done()
		var sealErr, openErr error
		var inner sync.WaitGroup
		inner.Add(2)
		go func() {
			defer inner.Done()
			for i := 0; i < n; i++ {
				ct, err := from.Seal(nil, []byte{byte(i)})
				if err != nil {
					sealErr = err
					return
				}
				out <- ct
			}
		}()
		go func() {
			defer inner.Done()
			for i := 0; i < n; i++ {
				pt, err := to.Open(nil, <-in)
				if err != nil {
					openErr = err
					return
				}
				if pt[0] != byte(i) {
					openErr = fmt.Errorf("message %d opened as %d", i, pt[0])
					return
				}
			}
		}()
		inner.Wait()
		if sealErr != nil || openErr != nil {
			t.Error(sealErr, openErr)
		}
	}
	wg.Add(2)
	// Each session seals in one goroutine while opening in another.
	go pump(r.client, r.client, c2s, s2c)
	go pump(r.server, r.server, s2c, c2s)
	wg.Wait()
}

func TestSealOpenDoNotAllocate(t *testing.T) {
	r := doHandshake(t, newKeypair(t), newKeypair(t))
	send, _, _ := r.client.DatagramCiphers()
	_, recv, _ := r.server.DatagramCiphers()
	pt := make([]byte, 1400)
	sealed := make([]byte, 0, 1500)
	opened := make([]byte, 0, 1500)
	var counter uint64
	allocs := testing.AllocsPerRun(100, func() {
		sealed, _ = r.client.Seal(sealed[:0], pt)
		opened, _ = r.server.Open(opened[:0], sealed)
		sealed = send.Seal(sealed[:0], counter, pt)
		opened, _ = recv.Open(opened[:0], counter, sealed)
		counter++
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per Seal+Open, want 0", allocs)
	}
}
