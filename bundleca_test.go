package warren

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA is a private CA and a certificate it signed for loopback, in files.
type testCA struct {
	pem      string // the CA's certificate
	certFile string // the leaf, for tlsCertFile
	keyFile  string
}

func newTestCA(t *testing.T) testCA {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "warren test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caTmpl, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	ca := testCA{
		pem:      string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})),
		certFile: filepath.Join(dir, "hub.crt"),
		keyFile:  filepath.Join(dir, "hub.key"),
	}
	writeFile(t, ca.certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER})))
	writeFile(t, ca.keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	return ca
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestBundleCarriesServerCAThatVerifiesTheHub(t *testing.T) {
	ca := newTestCA(t)
	// The config file names the CA by a file reference, as it may a key.
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "ca.pem"), ca.pem)
	path := filepath.Join(dir, "hub.json")
	writeFile(t, path, `{"listenAddr": "127.0.0.1:0", "subnet": "10.8.0.0/24", "bundleServerCa": "file:ca.pem"}`)
	loaded, err := LoadServerConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.BundleServerCA != ca.pem {
		t.Fatalf("bundleServerCa = %q, want the file's PEM", loaded.BundleServerCA)
	}

	h := newTestHub(t, func(c *ServerConfig) {
		c.TLSCertFile, c.TLSKeyFile = ca.certFile, ca.keyFile
		c.BundleServerCA = loaded.BundleServerCA
	})
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if b.Config.ServerCA != ca.pem || b.Config.ServerCertHash != "" {
		t.Fatalf("bundle serverCa %q, serverCertHash %q: want the CA and no pin", b.Config.ServerCA, b.Config.ServerCertHash)
	}
	// The CA is what lets the client in: without it, the system roots
	// refuse the hub's certificate.
	noCA := b.Config
	noCA.ServerCA = ""
	c, err := NewClient(noCA)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Connect without the CA: err = %v, want a certificate error", err)
	}
	c.Close()

	// A client config file may name the CA by a reference too.
	cpath := filepath.Join(dir, "alice.json")
	writeFile(t, cpath, fmt.Sprintf(`{"serverUrl": %q, "serverPublicKey": %q, "privateKey": %q, "serverCa": "file:ca.pem"}`,
		b.Config.ServerURL, b.Config.ServerPublicKey, b.Config.PrivateKey))
	ccfg, err := LoadClientConfig(cpath)
	if err != nil {
		t.Fatal(err)
	}
	if ccfg.ServerCA != ca.pem {
		t.Fatalf("client serverCa = %q, want the file's PEM", ccfg.ServerCA)
	}

	// With the bundle as it is, the client connects (connectBundle fails
	// the test otherwise).
	if tc := connectBundle(t, b); tc.Status() != StatusConnected {
		t.Fatalf("client status %v after Connect", tc.Status())
	}
}

func TestBundleServerCAIsValidated(t *testing.T) {
	ca := newTestCA(t)
	keyPEM, err := os.ReadFile(ca.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	withFiles := func(c *ServerConfig) { c.TLSCertFile, c.TLSKeyFile = ca.certFile, ca.keyFile }
	for _, tc := range []struct {
		name   string
		mutate func(*ServerConfig)
		words  []string
	}{
		{"not PEM", func(c *ServerConfig) { withFiles(c); c.BundleServerCA = "hello" }, []string{"PEM"}},
		{"a key", func(c *ServerConfig) { withFiles(c); c.BundleServerCA = string(keyPEM) }, []string{"CERTIFICATE"}},
		{"a reference outside a config file", func(c *ServerConfig) { withFiles(c); c.BundleServerCA = "file:ca.pem" }, []string{"config file"}},
		{"trailing text", func(c *ServerConfig) { withFiles(c); c.BundleServerCA = ca.pem + "junk" }, []string{"nothing else"}},
		{"a self-signed listener", func(c *ServerConfig) { c.BundleServerCA = ca.pem }, []string{"self-signed", "tlsCertFile"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kp, _ := GenerateKeypair()
			cfg := ServerConfig{ListenAddr: "127.0.0.1:0", PrivateKey: kp.PrivateKey, Subnet: netip.MustParsePrefix("10.8.0.0/24"), ForwardingMode: ForwardSocket}
			tc.mutate(&cfg)
			_, err := NewServer(cfg)
			wantConfigError(t, err, "bundleServerCa", tc.words...)
		})
	}

	// A reference in a config file that names no file.
	dir := t.TempDir()
	path := filepath.Join(dir, "hub.json")
	writeFile(t, path, `{"listenAddr": "127.0.0.1:0", "subnet": "10.8.0.0/24", "bundleServerCa": "file:missing.pem"}`)
	_, err = LoadServerConfig(path)
	wantConfigError(t, err, "bundleServerCa", "missing.pem", "no such file")
}
