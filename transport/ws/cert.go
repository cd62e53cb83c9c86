package ws

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"math/big"
	"net/netip"
	"time"
)

// selfSignedValidity is how long a certificate from SelfSignedCert is valid.
const selfSignedValidity = 10 * 365 * 24 * time.Hour

// SelfSignedCert makes an ECDSA P-256 self-signed certificate for hosts, each
// an IP address or a DNS name. If hosts is empty, the certificate is for
// 127.0.0.1, ::1 and localhost. It is valid from an hour ago (to tolerate clock
// skew) for ten years. The returned certificate has its Leaf field filled.
//
// Such a certificate is meant to be pinned by clients (see CertHash and
// DialConfig.ServerCertHash), not verified through WebPKI.
func SelfSignedCert(hosts ...string) (tls.Certificate, error) {
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1", "::1", "localhost"}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ws: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ws: generate serial number: %w", err)
	}
	notBefore := time.Now().Add(-time.Hour)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: hosts[0]},
		NotBefore:             notBefore,
		NotAfter:              notBefore.Add(selfSignedValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if h == "" {
			return tls.Certificate{}, fmt.Errorf("ws: self-signed certificate: empty host name")
		}
		if ip, err := netip.ParseAddr(h); err == nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip.AsSlice())
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ws: create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ws: parse certificate: %w", err)
	}
	return tls.Certificate{
		Certificate: [][]byte{der},
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}

// CertHash returns the pin of a certificate: the standard base64 encoding of
// the SHA-256 of its DER bytes. A client pins the server's leaf certificate by
// setting DialConfig.ServerCertHash to CertHash(cert.Leaf.Raw).
func CertHash(leafDER []byte) string {
	sum := sha256.Sum256(leafDER)
	return base64.StdEncoding.EncodeToString(sum[:])
}
