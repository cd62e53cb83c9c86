package warren

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/curve25519"
)

// Key is a Curve25519 key, private or public. Its text form is standard base64,
// the form `wg genkey` prints.
//
// In a config file read by LoadServerConfig or LoadClientConfig, a key field
// may instead name where the key is, so the secret need not sit in the file:
//
//	"privateKey": "${WARREN_PRIVATE_KEY}"      the environment variable's value
//	"privateKey": "file:/etc/warren/hub.key"   the file's content
//
// A relative file name is relative to the config file's directory. Space
// and line ends around the key are ignored (a file `wg genkey` wrote works).
// A variable that is unset or empty and a file that cannot be read are
// errors naming the field and the reference, never the key. Only config
// files resolve references: UnmarshalText, registry files and the admin API
// take a key as base64 only.
type Key [32]byte

// IsZero reports whether k is all zero bytes (unset).
func (k Key) IsZero() bool { return k == Key{} }

// String returns the base64 form of k.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// MarshalText implements encoding.TextMarshaler. A zero key marshals as "".
func (k Key) MarshalText() ([]byte, error) {
	if k.IsZero() {
		return []byte{}, nil
	}
	return []byte(k.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler. An empty string is the zero key.
func (k *Key) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*k = Key{}
		return nil
	}
	p, err := ParseKey(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// isKeyRef reports whether s, a key field's text in a config file, is a
// reference to the key rather than the key. Base64 has no '$' or ':'.
func isKeyRef(s string) bool {
	return strings.HasPrefix(s, "${") || strings.HasPrefix(s, "file:")
}

// resolveKeyRef reads the key the reference ref names: "${NAME}", an
// environment variable, or "file:PATH", a file, relative to dir unless
// absolute. Its errors name the reference and what is wrong, never the key.
func resolveKeyRef(ref, dir string) (Key, error) {
	text, from, err := readRef(ref, dir, "key")
	if err != nil {
		return Key{}, err
	}
	k, err := ParseKey(strings.TrimSpace(text))
	if err != nil {
		return Key{}, fmt.Errorf("the key in %s: %s", from, strings.TrimPrefix(err.Error(), "warren: "))
	}
	return k, nil
}

// readRef reads the text a reference names, "${NAME}" or "file:PATH" (PATH
// relative to dir unless absolute), and says where it came from; what names
// the thing referred to in errors ("key").
func readRef(ref, dir, what string) (text, from string, err error) {
	if name, ok := strings.CutPrefix(ref, "${"); ok {
		name, ok = strings.CutSuffix(name, "}")
		if !ok || !isEnvName(name) {
			return "", "", fmt.Errorf(`a %s reference must be "${NAME}", NAME letters, digits and '_'`, what)
		}
		v, set := os.LookupEnv(name)
		switch {
		case !set:
			return "", "", fmt.Errorf("environment variable %s is not set", name)
		case strings.TrimSpace(v) == "":
			return "", "", fmt.Errorf("environment variable %s is empty", name)
		}
		return v, "environment variable " + name, nil
	}
	path := strings.TrimPrefix(ref, "file:")
	if path == "" {
		return "", "", fmt.Errorf(`a %s reference must be "file:PATH"`, what)
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		// A *PathError names the file and why: not its content.
		return "", "", fmt.Errorf("reading the %s file: %w", what, err)
	}
	return string(b), "file " + path, nil
}

// isEnvName reports whether s is a portable environment variable name.
func isEnvName(s string) bool {
	for i, c := range s {
		if c != '_' && !('A' <= c && c <= 'Z') && !('a' <= c && c <= 'z') && !(i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return s != ""
}

// ParseKey parses the base64 text form of a key.
func ParseKey(s string) (Key, error) {
	var k Key
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return k, fmt.Errorf("warren: key is not standard base64: %w", err)
	}
	if len(b) != len(k) {
		return k, fmt.Errorf("warren: key is %d bytes, want %d", len(b), len(k))
	}
	copy(k[:], b)
	return k, nil
}

// PublicKey returns the X25519 public key of the private key k.
func (k Key) PublicKey() Key {
	var pub Key
	p, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err != nil {
		// Only a low-order result fails, which the basepoint cannot produce.
		panic("warren: X25519 with the basepoint failed: " + err.Error())
	}
	copy(pub[:], p)
	return pub
}

// Keypair is a private key and its public key.
type Keypair struct {
	PrivateKey Key `json:"privateKey"`
	PublicKey  Key `json:"publicKey"`
}

// GenerateKeypair returns a new Noise static keypair.
func GenerateKeypair() (Keypair, error) { return generate() }

// GenerateWGKeypair returns a new WireGuard keypair; the private key is clamped
// as `wg genkey` clamps it.
func GenerateWGKeypair() (Keypair, error) { return generate() }

func generate() (Keypair, error) {
	var kp Keypair
	if _, err := rand.Read(kp.PrivateKey[:]); err != nil {
		return kp, fmt.Errorf("warren: generating key: %w", err)
	}
	clamp(&kp.PrivateKey)
	kp.PublicKey = kp.PrivateKey.PublicKey()
	return kp, nil
}

// clamp applies the Curve25519 private key clamping (RFC 7748 §5).
func clamp(k *Key) {
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
}
