package transport

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
)

// ErrPinMismatch reports that the server's leaf certificate does not hash to
// the pinned value. The errors that wrap it say which hash was expected and
// which one the server presented.
var ErrPinMismatch = errors.New("transport: server certificate does not match pin")

// VerifyPin sets conf up to accept only a server whose leaf certificate hashes
// to pin: the standard base64 encoding of the SHA-256 of the leaf's DER bytes
// (DESIGN §3, serverCertHash). The pin is then the only check made: no chain,
// name or expiry verification, so a self-signed certificate works. Any
// VerifyConnection already in conf still runs after the pin matches; any
// VerifyPeerCertificate is dropped.
//
// It fails, leaving conf untouched, if pin is not base64 of 32 bytes. A
// handshake with a server presenting another certificate fails with an error
// wrapping ErrPinMismatch.
func VerifyPin(conf *tls.Config, pin string) error {
	want, err := base64.StdEncoding.DecodeString(pin)
	if err != nil || len(want) != sha256.Size {
		return fmt.Errorf("transport: pin %q: want base64 of a SHA-256 hash (44 characters)", pin)
	}
	next := conf.VerifyConnection
	conf.InsecureSkipVerify = true // the pin replaces WebPKI verification; VerifyConnection checks it
	conf.VerifyPeerCertificate = nil
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("%w: expected %s, got no certificate", ErrPinMismatch, pin)
		}
		got := sha256.Sum256(cs.PeerCertificates[0].Raw)
		if subtle.ConstantTimeCompare(got[:], want) != 1 {
			return fmt.Errorf("%w: expected %s, got %s", ErrPinMismatch, pin,
				base64.StdEncoding.EncodeToString(got[:]))
		}
		if next != nil {
			return next(cs)
		}
		return nil
	}
	return nil
}
