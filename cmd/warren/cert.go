package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// selfSignedCert loads the hub's self-signed certificate and key from path
// (PEM, both in one file), making them first if the file does not exist.
// The hub is given it as a tls.Config with the leaf parsed, so client
// bundles pin its hash as they pin the certificate NewServer would make, but
// the pin stays valid across restarts. host, when not empty, is written
// into the certificate's names.
func selfSignedCert(path, host string) (*tls.Config, bool, error) {
	made := false
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if b, err = makeCert(host); err != nil {
			return nil, false, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, false, err
		}
		if err := writeSecret(path, string(b)); err != nil {
			return nil, false, fmt.Errorf("--self-signed-cert: %w", err)
		}
		made = true
	} else if err != nil {
		return nil, false, fmt.Errorf("--self-signed-cert: %w", err)
	}
	cert, err := tls.X509KeyPair(b, b)
	if err != nil {
		return nil, false, fmt.Errorf("--self-signed-cert %s: %w", path, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, false, fmt.Errorf("--self-signed-cert %s: %w", path, err)
		}
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}}, made, nil
}

// makeCert returns a new ECDSA P-256 certificate and key as PEM.
func makeCert(host string) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "warren hub"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if host != "" {
		if ip, err := netip.ParseAddr(host); err == nil {
			tmpl.IPAddresses = []net.IP{ip.AsSlice()}
		} else {
			tmpl.DNSNames = []string{host}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})...), nil
}

// endpointHost is the host part of a host[:port] or of a wss:// URL.
func endpointHost(s string) string {
	if u, err := url.Parse(s); err == nil && strings.Contains(s, "://") {
		return u.Hostname()
	}
	if h, _, err := net.SplitHostPort(s); err == nil {
		return h
	}
	return s
}
