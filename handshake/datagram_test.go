package handshake_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/warrenvpn/warren/handshake"
)

func datagramPairs(t *testing.T) (r handshakeResult, cs, cr, ss, sr *handshake.DatagramCipher) {
	t.Helper()
	r = doHandshake(t, newKeypair(t), newKeypair(t))
	cs, cr, err := r.client.DatagramCiphers()
	if err != nil {
		t.Fatal(err)
	}
	ss, sr, err = r.server.DatagramCiphers()
	if err != nil {
		t.Fatal(err)
	}
	return r, cs, cr, ss, sr
}

func TestDatagramCiphersPairUp(t *testing.T) {
	_, cs, cr, ss, sr := datagramPairs(t)
	for _, dir := range []struct {
		name       string
		send, recv *handshake.DatagramCipher
	}{{"client to server", cs, sr}, {"server to client", ss, cr}} {
		for _, counter := range []uint64{0, 1, 1 << 40, handshake.MaxMessages - 1} {
			pt := []byte(dir.name)
			ct := dir.send.Seal(nil, counter, pt)
			if len(ct) != len(pt)+handshake.Overhead {
				t.Fatalf("%s: ciphertext is %d bytes", dir.name, len(ct))
			}
			got, err := dir.recv.Open(nil, counter, ct)
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("%s counter %d: Open = %q, %v", dir.name, counter, got, err)
			}
			if _, err := dir.recv.Open(nil, counter+1, ct); !errors.Is(err, handshake.ErrDecrypt) {
				t.Fatalf("%s: Open with another counter: %v, want ErrDecrypt", dir.name, err)
			}
		}
	}
	// A cipher does not open its own direction's reverse.
	ct := cs.Seal(nil, 0, []byte("x"))
	if _, err := cr.Open(nil, 0, ct); !errors.Is(err, handshake.ErrDecrypt) {
		t.Fatalf("client recv opened client send's datagram: %v", err)
	}
}

func TestDatagramKeysDifferFromStreamKeysOnTheWire(t *testing.T) {
	r, cs, _, _, sr := datagramPairs(t)
	pt := []byte("same plaintext, same counter 0")
	streamCT, _ := r.client.Seal(nil, pt)
	dgramCT := cs.Seal(nil, 0, pt)
	if bytes.Equal(streamCT, dgramCT) {
		t.Fatal("datagram counter 0 sealed like stream message 0: same key")
	}
	if _, err := sr.Open(nil, 0, streamCT); err == nil {
		t.Fatal("datagram cipher opened a stream message")
	}
	if _, err := r.server.Open(nil, dgramCT); err == nil {
		t.Fatal("stream cipher opened a datagram")
	}
}

func TestDatagramCiphersOncePerSession(t *testing.T) {
	r, _, _, _, _ := datagramPairs(t)
	if _, _, err := r.client.DatagramCiphers(); err == nil {
		t.Fatal("second DatagramCiphers call succeeded")
	}
}

func TestDatagramReorderAndReplay(t *testing.T) {
	_, cs, _, _, sr := datagramPairs(t)
	const n = 3000
	wire := make([][]byte, n)
	for i := range wire {
		wire[i] = cs.Seal(nil, uint64(i), []byte{byte(i), byte(i >> 8)})
	}
	// Deliver in a shuffled order, then every packet again.
	order := rand.New(rand.NewPCG(1, 2)).Perm(n)
	var w handshake.ReplayWindow
	receive := func(counter int) bool {
		pt, err := sr.Open(nil, uint64(counter), wire[counter])
		if err != nil {
			t.Fatalf("datagram %d: %v", counter, err)
		}
		if pt[0] != byte(counter) || pt[1] != byte(counter>>8) {
			t.Fatalf("datagram %d opened as %x", counter, pt)
		}
		return w.Accept(uint64(counter))
	}
	for _, c := range order {
		if !receive(c) {
			t.Fatalf("reordered datagram %d refused", c)
		}
	}
	for _, c := range order {
		if receive(c) {
			t.Fatalf("replayed datagram %d accepted", c)
		}
	}
	// Jump far ahead: old counters fall out of the window.
	far := uint64(n + 10000)
	if _, err := sr.Open(nil, far, cs.Seal(nil, far, nil)); err != nil || !w.Accept(far) {
		t.Fatalf("datagram %d refused: %v", far, err)
	}
	if w.Accept(far - 9000) {
		t.Fatal("counter 9000 behind the newest accepted")
	}
}

func TestDatagramCipherConcurrentUse(t *testing.T) {
	_, cs, _, _, sr := datagramPairs(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 0, 64)
			for i := range 200 {
				counter := uint64(g*1000 + i)
				buf = cs.Seal(buf[:0], counter, []byte("concurrent"))
				if pt, err := sr.Open(nil, counter, buf); err != nil || string(pt) != "concurrent" {
					t.Errorf("counter %d: %q, %v", counter, pt, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
