// Package handshake authenticates a Warren client and server and gives them
// the ciphers for the session that follows (DESIGN §3).
//
// The handshake is Noise_IK_25519_ChaChaPoly_BLAKE2s with the prologue
// [Prologue]: the client knows the server's static key in advance, the first
// message already carries the client's identity and an encrypted [ClientHello],
// and the second message completes mutual authentication with an encrypted
// [ServerHello]. It is built on github.com/flynn/noise, a small, widely used
// implementation of the Noise framework checked against the specification's
// test vectors, so this package composes a vetted protocol rather than
// inventing one. golang.org/x/crypto supplies ChaCha20-Poly1305, X25519 and
// HKDF.
//
// After the handshake a [Session] seals the stream frames with Noise's
// implicit counters; [Session.DatagramCiphers] derives separate keys for QUIC
// datagrams, which carry an explicit counter and are checked against a
// [ReplayWindow]. Noise IK's first message can be replayed, so the server
// keeps the greatest hello timestamp per client key in a [TimestampGuard].
package handshake

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"

	"github.com/flynn/noise"
	"golang.org/x/crypto/curve25519"
)

// Prologue is mixed into the handshake hash: a peer speaking another protocol
// version fails the handshake instead of misreading it.
const Prologue = "warren/1"

// maxHelloLen bounds the JSON of a hello. Anything longer is refused before
// it is decrypted or parsed.
const maxHelloLen = 4096

const (
	keyLen  = 32
	tagLen  = 16
	msg1Min = keyLen + keyLen + tagLen + tagLen // e, encrypted s, empty payload's tag
	msg2Min = keyLen + tagLen                   // e, empty payload's tag
)

var cipherSuite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)

// ClientHello is the client's payload in handshake message 1.
type ClientHello struct {
	// Timestamp is the client's clock in unix nanoseconds. The server refuses
	// a hello that is not newer than the last one it accepted from the same
	// key (see [TimestampGuard]).
	Timestamp int64 `json:"timestamp"`
	// Version is the client's software version, for logs.
	Version string `json:"version"`
	// Tags are the client-defined tags.
	Tags []string `json:"tags,omitempty"`
}

// ServerHello is the server's payload in handshake message 2: how the client
// configures its end of the tunnel.
type ServerHello struct {
	// AssignedPrefix is the client's tunnel address with the subnet's prefix
	// length, e.g. 10.8.0.2/24.
	AssignedPrefix netip.Prefix `json:"assignedPrefix"`
	// Gateway is the hub's tunnel address.
	Gateway netip.Addr `json:"gateway"`
	// DNS lists the resolvers the client should use, if any.
	DNS []netip.Addr `json:"dns,omitempty"`
	// MTU is the tunnel MTU for this session, in bytes.
	MTU int `json:"mtu"`
	// KeepaliveSeconds is the keepalive interval the server asks for.
	KeepaliveSeconds int `json:"keepaliveSeconds"`
}

// Errors that callers branch on. Errors returned by this package wrap them.
var (
	// ErrReplay: a handshake message 1 is not newer than one already
	// accepted from the same client key.
	ErrReplay = errors.New("handshake: replayed handshake")
	// ErrDecrypt: a message does not authenticate, e.g. it was sealed for
	// another server key, was altered in transit, or is out of order.
	ErrDecrypt = errors.New("handshake: message does not authenticate")
	// ErrMalformed: a message has an impossible length or its hello is not
	// valid JSON.
	ErrMalformed = errors.New("handshake: malformed message")
	// ErrNonceExhausted: a Session has sealed or opened MaxMessages messages
	// in one direction. The caller must end the session and handshake again.
	ErrNonceExhausted = errors.New("handshake: session message limit reached, handshake again")
)

// errState reports a method called out of order, e.g. ReadResp before
// WriteInit or a second WriteInit.
var errState = errors.New("handshake: method called out of order")

// An Initiator runs the client side of one handshake: WriteInit, then ReadResp.
// It is not safe for concurrent use and cannot be reused.
type Initiator struct {
	hs   *noise.HandshakeState
	step int // 0: WriteInit next, 1: ReadResp next, 2: done or failed
}

// NewInitiator returns an Initiator for a client with the given static key
// pair that expects the server's static public key serverPublicKey.
// It fails if publicKey is not privateKey's public key.
func NewInitiator(privateKey, publicKey, serverPublicKey [32]byte) (*Initiator, error) {
	if err := checkKeypair(privateKey, publicKey); err != nil {
		return nil, err
	}
	if serverPublicKey == ([32]byte{}) {
		return nil, errors.New("handshake: server public key is zero")
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   cipherSuite,
		Pattern:       noise.HandshakeIK,
		Initiator:     true,
		Prologue:      []byte(Prologue),
		StaticKeypair: noise.DHKey{Private: privateKey[:], Public: publicKey[:]},
		PeerStatic:    serverPublicKey[:],
	})
	if err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	return &Initiator{hs: hs}, nil
}

// WriteInit returns handshake message 1, whose encrypted payload is hello as
// JSON.
func (i *Initiator) WriteInit(hello ClientHello) ([]byte, error) {
	if i.step != 0 {
		return nil, fmt.Errorf("%w: WriteInit called twice", errState)
	}
	payload, err := marshalHello(hello)
	if err != nil {
		return nil, err
	}
	i.step = 2
	msg, _, _, err := i.hs.WriteMessage(nil, payload)
	if err != nil {
		return nil, fmt.Errorf("handshake: write message 1: %w", err)
	}
	i.step = 1
	return msg, nil
}

// ReadResp reads handshake message 2 and returns the server's hello and the
// session keys. A message that does not authenticate, e.g. because the server
// does not hold the expected key, yields [ErrDecrypt]; an impossible length or
// bad JSON yields [ErrMalformed]. The hello's fields are not checked beyond
// their JSON syntax.
func (i *Initiator) ReadResp(msg []byte) (ServerHello, *Session, error) {
	if i.step != 1 {
		return ServerHello{}, nil, fmt.Errorf("%w: ReadResp before WriteInit or after the handshake", errState)
	}
	i.step = 2 // a failed message 2 leaves the handshake state unusable
	if len(msg) < msg2Min || len(msg) > msg2Min+maxHelloLen {
		return ServerHello{}, nil, fmt.Errorf("%w: message 2 is %d bytes, want %d to %d", ErrMalformed, len(msg), msg2Min, msg2Min+maxHelloLen)
	}
	payload, cs1, cs2, err := i.hs.ReadMessage(nil, msg)
	if err != nil {
		return ServerHello{}, nil, readError(2, err)
	}
	var hello ServerHello
	if err := unmarshalHello(payload, &hello); err != nil {
		return ServerHello{}, nil, err
	}
	// cs1 carries initiator-to-responder messages, cs2 the reverse.
	return hello, newSession(cs1, cs2, i.hs.ChannelBinding()), nil
}

// A Responder runs the server side of one handshake: ReadInit, then, if the
// caller accepts the client, WriteResp. It is not safe for concurrent use and
// cannot be reused.
type Responder struct {
	hs   *noise.HandshakeState
	step int // 0: ReadInit next, 1: WriteResp next, 2: done or failed
}

// NewResponder returns a Responder for a server with the given static key
// pair. It fails if publicKey is not privateKey's public key.
func NewResponder(privateKey, publicKey [32]byte) (*Responder, error) {
	if err := checkKeypair(privateKey, publicKey); err != nil {
		return nil, err
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   cipherSuite,
		Pattern:       noise.HandshakeIK,
		Initiator:     false,
		Prologue:      []byte(Prologue),
		StaticKeypair: noise.DHKey{Private: privateKey[:], Public: publicKey[:]},
	})
	if err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	return &Responder{hs: hs}, nil
}

// ReadInit reads handshake message 1 and returns the client's static public
// key and hello. It answers nothing by itself: the caller looks the key up,
// checks the timestamp with a [TimestampGuard], and then calls WriteResp, sends
// a sealed Disconnect, or closes the connection without a word.
//
// A message sealed for another server key, or altered, yields [ErrDecrypt];
// an impossible length or bad JSON yields [ErrMalformed].
func (r *Responder) ReadInit(msg []byte) (peerStatic [32]byte, hello ClientHello, err error) {
	if r.step != 0 {
		return peerStatic, hello, fmt.Errorf("%w: ReadInit called twice", errState)
	}
	r.step = 2 // a failed message 1 leaves the handshake state unusable
	if len(msg) < msg1Min || len(msg) > msg1Min+maxHelloLen {
		return peerStatic, hello, fmt.Errorf("%w: message 1 is %d bytes, want %d to %d", ErrMalformed, len(msg), msg1Min, msg1Min+maxHelloLen)
	}
	payload, _, _, err := r.hs.ReadMessage(nil, msg)
	if err != nil {
		return peerStatic, hello, readError(1, err)
	}
	if err := unmarshalHello(payload, &hello); err != nil {
		return peerStatic, ClientHello{}, err
	}
	copy(peerStatic[:], r.hs.PeerStatic())
	r.step = 1
	return peerStatic, hello, nil
}

// WriteResp returns handshake message 2, whose encrypted payload is hello as
// JSON, and the session keys. Call it only after ReadInit succeeded.
func (r *Responder) WriteResp(hello ServerHello) ([]byte, *Session, error) {
	if r.step != 1 {
		return nil, nil, fmt.Errorf("%w: WriteResp without a successful ReadInit", errState)
	}
	payload, err := marshalHello(hello)
	if err != nil {
		return nil, nil, err
	}
	r.step = 2
	msg, cs1, cs2, err := r.hs.WriteMessage(nil, payload)
	if err != nil {
		return nil, nil, fmt.Errorf("handshake: write message 2: %w", err)
	}
	// cs1 carries initiator-to-responder messages, cs2 the reverse.
	return msg, newSession(cs2, cs1, r.hs.ChannelBinding()), nil
}

// checkKeypair refuses a zero private key and a public key that does not
// belong to the private key: either would only surface later as a handshake
// the peer cannot authenticate.
//
// A server makes a Responder for every connection with the same key pair, so
// the last pair found good is remembered: an unauthenticated message 1 then
// costs no scalar multiplication beyond the handshake's own.
func checkKeypair(privateKey, publicKey [32]byte) error {
	if privateKey == ([32]byte{}) {
		return errors.New("handshake: private key is zero")
	}
	if kp := lastGoodKeypair.Load(); kp != nil &&
		subtle.ConstantTimeCompare(kp.priv[:], privateKey[:]) == 1 && kp.pub == publicKey {
		return nil
	}
	pub, err := curve25519.X25519(privateKey[:], curve25519.Basepoint)
	if err != nil {
		return fmt.Errorf("handshake: private key: %w", err)
	}
	if !bytes.Equal(pub, publicKey[:]) {
		return errors.New("handshake: public key does not match private key")
	}
	lastGoodKeypair.Store(&staticKeypair{priv: privateKey, pub: publicKey})
	return nil
}

type staticKeypair struct{ priv, pub [32]byte }

var lastGoodKeypair atomic.Pointer[staticKeypair]

// readError classifies an error from noise's ReadMessage: a short message is
// malformed; anything else (failed AEAD tag, low-order point) means the
// message does not authenticate.
func readError(msgNum int, err error) error {
	if errors.Is(err, noise.ErrShortMessage) {
		return fmt.Errorf("%w: message %d: %w", ErrMalformed, msgNum, err)
	}
	return fmt.Errorf("%w: message %d: %w", ErrDecrypt, msgNum, err)
}

func marshalHello(hello any) ([]byte, error) {
	b, err := json.Marshal(hello)
	if err != nil {
		return nil, fmt.Errorf("handshake: encode hello: %w", err)
	}
	if len(b) > maxHelloLen {
		return nil, fmt.Errorf("handshake: hello is %d bytes of JSON, max %d", len(b), maxHelloLen)
	}
	return b, nil
}

func unmarshalHello(b []byte, hello any) error {
	if len(b) > maxHelloLen {
		return fmt.Errorf("%w: hello is %d bytes, max %d", ErrMalformed, len(b), maxHelloLen)
	}
	if err := json.Unmarshal(b, hello); err != nil {
		return fmt.Errorf("%w: hello: %w", ErrMalformed, err)
	}
	return nil
}
