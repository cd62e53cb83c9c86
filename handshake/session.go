package handshake

import (
	"bytes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/flynn/noise"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/hkdf"
)

const (
	// Overhead is how many bytes sealing adds to a message: the
	// Poly1305 tag.
	Overhead = chacha20poly1305.Overhead

	// MaxMessages is how many messages a Session seals or opens in one
	// direction before it fails with [ErrNonceExhausted]. It lies far below
	// Noise's own limit of 2^64-1 so that a session is replaced by a new
	// handshake long before a nonce could repeat; a [ReplayWindow] refuses
	// datagram counters from MaxMessages on.
	MaxMessages = 1 << 60

	// datagramInfo labels the HKDF that derives datagram keys from stream
	// keys, so the two never coincide.
	datagramInfo = "warren/1 datagram"
)

// A Session holds the two transport ciphers of a completed handshake, with
// implicit counters as Noise specifies: messages in each direction must be
// opened in the order they were sealed, with none missing (a stream).
//
// Seal must not run concurrently with Seal, nor Open with Open; Seal and Open
// may run concurrently with each other.
type Session struct {
	send, recv       cipher.AEAD
	sendN, recvN     uint64
	sendNce, recvNce [chacha20poly1305.NonceSize]byte // held here so no nonce escapes to the heap per message

	sendKey, recvKey [32]byte // kept to derive the datagram keys
	binding          []byte
	datagramsTaken   atomic.Bool
}

func newSession(send, recv *noise.CipherState, binding []byte) *Session {
	s := &Session{
		sendKey: send.UnsafeKey(),
		recvKey: recv.UnsafeKey(),
		binding: bytes.Clone(binding),
	}
	s.send = newAEAD(s.sendKey)
	s.recv = newAEAD(s.recvKey)
	return s
}

func newAEAD(key [32]byte) cipher.AEAD {
	a, err := chacha20poly1305.New(key[:])
	if err != nil {
		// Only a key of the wrong length fails, and key is [32]byte.
		panic("handshake: " + err.Error())
	}
	return a
}

// putNonce writes counter into nonce in Noise's ChaChaPoly layout: four zero
// bytes, then the counter little-endian.
func putNonce(nonce *[chacha20poly1305.NonceSize]byte, counter uint64) {
	binary.LittleEndian.PutUint64(nonce[4:], counter)
}

// Seal appends the sealed plaintext, [Overhead] bytes longer, to dst and
// returns the extended slice. dst and plaintext may overlap exactly or not at
// all. After [MaxMessages] messages it returns [ErrNonceExhausted] and seals
// nothing more: the caller ends the session.
func (s *Session) Seal(dst, plaintext []byte) ([]byte, error) {
	if s.sendN >= MaxMessages {
		return dst, ErrNonceExhausted
	}
	putNonce(&s.sendNce, s.sendN)
	s.sendN++
	return s.send.Seal(dst, s.sendNce[:], plaintext, nil), nil
}

// Open authenticates the next message from the peer, appends its plaintext to
// dst and returns the extended slice. dst and ciphertext may overlap exactly
// or not at all. A message that does not authenticate yields [ErrDecrypt] and
// does not advance the counter.
func (s *Session) Open(dst, ciphertext []byte) ([]byte, error) {
	if s.recvN >= MaxMessages {
		return nil, ErrNonceExhausted
	}
	putNonce(&s.recvNce, s.recvN)
	out, err := s.recv.Open(dst, s.recvNce[:], ciphertext, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: stream message %d", ErrDecrypt, s.recvN)
	}
	s.recvN++
	return out, nil
}

// ChannelBinding returns the handshake hash, a value both peers share and no
// other session has. The caller may modify the returned slice.
func (s *Session) ChannelBinding() []byte {
	return bytes.Clone(s.binding)
}

// DatagramCiphers returns the ciphers for QUIC datagrams: send for packets to
// the peer, recv for packets from it, each the peer's counterpart. Their keys
// are HKDF-SHA256 of the direction's stream key, with the channel binding as
// salt and "warren/1 datagram" as info, so a key is never used with both an
// implicit and an explicit counter.
//
// It may be called once per session: a second pair of ciphers with the same
// keys would invite two senders to reuse counters, so later calls fail.
func (s *Session) DatagramCiphers() (send, recv *DatagramCipher, err error) {
	if s.datagramsTaken.Swap(true) {
		return nil, nil, errors.New("handshake: datagram ciphers already taken for this session")
	}
	sk, err := s.datagramKey(s.sendKey)
	if err != nil {
		return nil, nil, err
	}
	rk, err := s.datagramKey(s.recvKey)
	if err != nil {
		return nil, nil, err
	}
	return &DatagramCipher{aead: newAEAD(sk)}, &DatagramCipher{aead: newAEAD(rk)}, nil
}

func (s *Session) datagramKey(streamKey [32]byte) ([32]byte, error) {
	var k [32]byte
	r := hkdf.New(sha256.New, streamKey[:], s.binding, []byte(datagramInfo))
	if _, err := io.ReadFull(r, k[:]); err != nil {
		return k, fmt.Errorf("handshake: derive datagram key: %w", err)
	}
	return k, nil
}

// A DatagramCipher seals or opens datagrams with ChaCha20-Poly1305, using an
// explicit counter as the nonce (laid out as in Noise: four zero bytes, then
// the counter little-endian). Datagrams may arrive in any order; the receiver
// opens each one, then checks its counter with a [ReplayWindow].
//
// The sender must never use a counter twice and must stop before
// [MaxMessages]. A DatagramCipher is safe for concurrent use.
type DatagramCipher struct {
	aead cipher.AEAD
}

// noncePool lends nonce buffers: a nonce on the stack would escape through
// the cipher.AEAD interface and cost an allocation per datagram, and a buffer
// in the DatagramCipher would forbid concurrent use.
var noncePool = sync.Pool{New: func() any { return new([chacha20poly1305.NonceSize]byte) }}

// Seal appends plaintext sealed under counter, [Overhead] bytes longer, to dst
// and returns the extended slice. dst and plaintext may overlap exactly or not
// at all.
func (c *DatagramCipher) Seal(dst []byte, counter uint64, plaintext []byte) []byte {
	nonce := noncePool.Get().(*[chacha20poly1305.NonceSize]byte)
	putNonce(nonce, counter)
	dst = c.aead.Seal(dst, nonce[:], plaintext, nil)
	noncePool.Put(nonce)
	return dst
}

// Open authenticates ciphertext sealed under counter, appends its plaintext to
// dst and returns the extended slice, or fails with [ErrDecrypt]. It does not
// check for replays: see [ReplayWindow].
func (c *DatagramCipher) Open(dst []byte, counter uint64, ciphertext []byte) ([]byte, error) {
	nonce := noncePool.Get().(*[chacha20poly1305.NonceSize]byte)
	putNonce(nonce, counter)
	out, err := c.aead.Open(dst, nonce[:], ciphertext, nil)
	noncePool.Put(nonce)
	if err != nil {
		return nil, fmt.Errorf("%w: datagram %d", ErrDecrypt, counter)
	}
	return out, nil
}
