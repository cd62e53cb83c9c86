package handshake

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/flynn/noise"
)

// Session must produce exactly Noise's transport messages, so a peer using
// flynn/noise's CipherState directly interoperates.
func TestSessionMatchesNoiseCipherState(t *testing.T) {
	var k1, k2 [32]byte
	rand.Read(k1[:])
	rand.Read(k2[:])
	s := newSession(noise.UnsafeNewCipherState(cipherSuite, k1, 0), noise.UnsafeNewCipherState(cipherSuite, k2, 0), []byte("binding"))
	enc := noise.UnsafeNewCipherState(cipherSuite, k1, 0)
	dec := noise.UnsafeNewCipherState(cipherSuite, k2, 0)
	for i := 0; i < 5; i++ {
		pt := bytes.Repeat([]byte{byte(i)}, i*10)
		got, err := s.Seal(nil, pt)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := enc.Encrypt(nil, nil, pt)
		if !bytes.Equal(got, want) {
			t.Fatalf("message %d: Session.Seal = %x, noise = %x", i, got, want)
		}
		ct := dec.Cipher().Encrypt(nil, uint64(i), nil, pt)
		if out, err := s.Open(nil, ct); err != nil || !bytes.Equal(out, pt) {
			t.Fatalf("message %d: Session.Open of noise ciphertext: %x, %v", i, out, err)
		}
	}
}

func TestSessionStopsBeforeNonceReuse(t *testing.T) {
	var k [32]byte
	s := newSession(noise.UnsafeNewCipherState(cipherSuite, k, 0), noise.UnsafeNewCipherState(cipherSuite, k, 0), nil)
	s.sendN = MaxMessages - 1
	if _, err := s.Seal(nil, []byte("last")); err != nil {
		t.Fatalf("Seal of message MaxMessages-1: %v", err)
	}
	for i := 0; i < 2; i++ {
		if _, err := s.Seal(nil, []byte("one too many")); !errors.Is(err, ErrNonceExhausted) {
			t.Fatalf("Seal past MaxMessages: %v, want ErrNonceExhausted", err)
		}
	}
	s.recvN = MaxMessages
	if _, err := s.Open(nil, make([]byte, 32)); !errors.Is(err, ErrNonceExhausted) {
		t.Fatalf("Open past MaxMessages: %v, want ErrNonceExhausted", err)
	}
}

func TestDatagramKeysDifferFromStreamKeys(t *testing.T) {
	var k1, k2 [32]byte
	rand.Read(k1[:])
	rand.Read(k2[:])
	s := newSession(noise.UnsafeNewCipherState(cipherSuite, k1, 0), noise.UnsafeNewCipherState(cipherSuite, k2, 0), []byte("binding"))
	dk1, _ := s.datagramKey(k1)
	dk2, _ := s.datagramKey(k2)
	if dk1 == k1 || dk2 == k2 || dk1 == dk2 || dk1 == k2 || dk2 == k1 {
		t.Fatal("a datagram key equals a stream key or the other datagram key")
	}
	other := newSession(noise.UnsafeNewCipherState(cipherSuite, k1, 0), noise.UnsafeNewCipherState(cipherSuite, k2, 0), []byte("another handshake"))
	if odk1, _ := other.datagramKey(k1); odk1 == dk1 {
		t.Fatal("the channel binding does not enter the datagram key")
	}
}
