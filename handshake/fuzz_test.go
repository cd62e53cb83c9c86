package handshake_test

import (
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/flynn/noise"
	"golang.org/x/crypto/curve25519"

	"github.com/warrenvpn/warren/handshake"
)

// fixedKeypair derives a key pair from seed, so fuzz corpora stay valid
// across runs.
func fixedKeypair(seed string) keypair {
	k := keypair{priv: sha256.Sum256([]byte(seed))}
	pub, _ := curve25519.X25519(k.priv[:], curve25519.Basepoint)
	copy(k.pub[:], pub)
	return k
}

var fuzzServer, fuzzClient = fixedKeypair("fuzz server"), fixedKeypair("fuzz client")

// FuzzReadInit feeds arbitrary bytes to Responder.ReadInit: it must not panic
// and must fail only with ErrMalformed or ErrDecrypt.
func FuzzReadInit(f *testing.F) {
	ini, err := handshake.NewInitiator(fuzzClient.priv, fuzzClient.pub, fuzzServer.pub)
	if err != nil {
		f.Fatal(err)
	}
	valid, err := ini.WriteInit(testClientHello)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add([]byte{})
	f.Add(make([]byte, 96))
	f.Add(valid[:len(valid)-1])
	f.Fuzz(func(t *testing.T, msg []byte) {
		r, err := handshake.NewResponder(fuzzServer.priv, fuzzServer.pub)
		if err != nil {
			t.Fatal(err)
		}
		key, _, err := r.ReadInit(msg)
		if err != nil {
			if !errors.Is(err, handshake.ErrMalformed) && !errors.Is(err, handshake.ErrDecrypt) {
				t.Fatalf("ReadInit error %v wraps neither ErrMalformed nor ErrDecrypt", err)
			}
			return
		}
		if key != fuzzClient.pub {
			t.Fatalf("ReadInit accepted a message from key %x", key)
		}
		if _, _, err := r.WriteResp(testServerHello); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzReadInitHello seals arbitrary bytes as the hello of an authentic
// message 1, which reaches the JSON parsing that random messages cannot.
func FuzzReadInitHello(f *testing.F) {
	f.Add([]byte(`{"timestamp":1,"version":"v1","tags":["a"]}`))
	f.Add([]byte(`{"timestamp":1,"unknown":{"nested":[1,2,3]}}`))
	f.Add([]byte(`{"timestamp":"not a number"}`))
	f.Add([]byte(`{}{}`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, payload []byte) {
		if len(payload) > noise.MaxMsgLen-200 {
			return
		}
		hs, err := noise.NewHandshakeState(noise.Config{
			CipherSuite:   noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s),
			Pattern:       noise.HandshakeIK,
			Initiator:     true,
			Prologue:      []byte(handshake.Prologue),
			StaticKeypair: noise.DHKey{Private: fuzzClient.priv[:], Public: fuzzClient.pub[:]},
			PeerStatic:    fuzzServer.pub[:],
		})
		if err != nil {
			t.Fatal(err)
		}
		msg, _, _, err := hs.WriteMessage(nil, payload)
		if err != nil {
			t.Fatal(err)
		}
		r, _ := handshake.NewResponder(fuzzServer.priv, fuzzServer.pub)
		if _, _, err := r.ReadInit(msg); err != nil && !errors.Is(err, handshake.ErrMalformed) {
			t.Fatalf("ReadInit of an authentic message with hello %q: %v, want success or ErrMalformed", payload, err)
		}
	})
}
