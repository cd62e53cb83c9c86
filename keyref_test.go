package warren

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadConfigResolvesKeyReferences(t *testing.T) {
	hub, _ := GenerateKeypair()
	wg, _ := GenerateWGKeypair()
	seed, _ := GenerateKeypair()
	dir := t.TempDir()
	t.Setenv("WARREN_TEST_HUB_KEY", hub.PrivateKey.String())
	// A file as `wg genkey > hub.wg` writes it, named relative to the config.
	if err := os.WriteFile(filepath.Join(dir, "hub.wg"), []byte(wg.PrivateKey.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	seedFile := filepath.Join(dir, "seed.pub")
	if err := os.WriteFile(seedFile, []byte(seed.PublicKey.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "hub.json")
	text := fmt.Sprintf(`{
  "listenAddr": "127.0.0.1:0",
  "privateKey": "${WARREN_TEST_HUB_KEY}",
  "wgPrivateKey": "file:hub.wg",
  "subnet": "10.8.0.0/24",
  "clients": [{"clientId": "a", "publicKey": %q, "assignedIp": "10.8.0.2", "enabled": true}]
}`, "file:"+seedFile)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadServerConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PrivateKey != hub.PrivateKey || cfg.WGPrivateKey != wg.PrivateKey || len(cfg.Clients) != 1 || cfg.Clients[0].PublicKey != seed.PublicKey {
		t.Fatal("LoadServerConfig did not resolve the key references to the keys")
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	c, _ := GenerateKeypair()
	t.Setenv("WARREN_TEST_CLIENT_KEY", " "+c.PrivateKey.String()+"\n")
	cpath := filepath.Join(dir, "client.json")
	ctext := fmt.Sprintf(`{"serverUrl": "wss://127.0.0.1:4443", "serverPublicKey": %q, "privateKey": "${WARREN_TEST_CLIENT_KEY}"}`, hub.PublicKey)
	if err := os.WriteFile(cpath, []byte(ctext), 0o600); err != nil {
		t.Fatal(err)
	}
	ccfg, err := LoadClientConfig(cpath)
	if err != nil {
		t.Fatal(err)
	}
	if ccfg.PrivateKey != c.PrivateKey || ccfg.ServerPublicKey != hub.PublicKey {
		t.Fatal("LoadClientConfig did not resolve the key reference")
	}
}

func TestKeyReferenceErrorsNameFieldAndCauseNotSecret(t *testing.T) {
	dir := t.TempDir()
	const secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQ=" // base64, but 20 bytes: not a key
	if err := os.WriteFile(filepath.Join(dir, "short.key"), []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WARREN_TEST_SHORT", secret)
	t.Setenv("WARREN_TEST_EMPTY", "")
	os.Unsetenv("WARREN_TEST_UNSET")
	for _, tc := range []struct {
		ref   string
		words []string
	}{
		{"${WARREN_TEST_UNSET}", []string{"WARREN_TEST_UNSET", "not set"}},
		{"${WARREN_TEST_EMPTY}", []string{"WARREN_TEST_EMPTY", "empty"}},
		{"${WARREN_TEST_SHORT}", []string{"environment variable WARREN_TEST_SHORT", "key is 20 bytes, want 32"}},
		{"${WARREN TEST}", []string{"${NAME}"}},
		{"${WARREN_TEST_UNSET", []string{"${NAME}"}},
		{"file:missing.key", []string{"missing.key", "no such file"}},
		{"file:" + dir, []string{"reading the key file", "is a directory"}},
		{"file:short.key", []string{"short.key", "key is 20 bytes, want 32"}},
		{"file:", []string{"file:PATH"}},
	} {
		t.Run(tc.ref, func(t *testing.T) {
			path := filepath.Join(dir, "hub.json")
			text := fmt.Sprintf(`{"listenAddr": "127.0.0.1:0", "privateKey": %q, "subnet": "10.8.0.0/24"}`, tc.ref)
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadServerConfig(path)
			wantConfigError(t, err, "privateKey", append(tc.words, tc.ref)...)
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("the error echoes the referenced text: %v", err)
			}
		})
	}
}

func TestKeyReferencesAreResolvedOnlyInConfigFiles(t *testing.T) {
	kp, _ := GenerateKeypair()
	t.Setenv("WARREN_TEST_PUB", kp.PublicKey.String())
	// Not by Key's own decoding, which the admin API's requests use ...
	var e ClientEntry
	if err := json.Unmarshal([]byte(`{"clientId": "a", "publicKey": "${WARREN_TEST_PUB}"}`), &e); err == nil {
		t.Fatal("a ClientEntry resolved a key reference")
	}
	// ... nor by the registry file.
	path := filepath.Join(t.TempDir(), "registry.json")
	doc := `{"version": 1, "clients": [{"clientId": "a", "publicKey": "${WARREN_TEST_PUB}", "assignedIp": "10.8.0.2", "enabled": true}]}`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFileStore(path); err == nil {
		t.Fatal("the registry file resolved a key reference")
	} else {
		wantConfigError(t, err, "clients[0].publicKey", "base64")
	}
}
