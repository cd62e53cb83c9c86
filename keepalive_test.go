package warren

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestKeepaliveConfigValidation(t *testing.T) {
	kp, err := GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		k     KeepaliveConfig
		field string
	}{
		{"negative", KeepaliveConfig{HealthyIntervalMs: -1}, "keepalive.healthyIntervalMs"},
		{"degraded above healthy", KeepaliveConfig{HealthyIntervalMs: 1000, DegradedIntervalMs: 2000}, "keepalive.degradedIntervalMs"},
		{"critical above degraded", KeepaliveConfig{HealthyIntervalMs: 1000, DegradedIntervalMs: 500, CriticalIntervalMs: 600}, "keepalive.criticalIntervalMs"},
		{"dead peer too soon", KeepaliveConfig{HealthyIntervalMs: 1000, DegradedIntervalMs: 500, CriticalIntervalMs: 200, DeadPeerTimeoutMs: 1500}, "keepalive.deadPeerTimeoutMs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewServer(ServerConfig{ListenAddr: "127.0.0.1:0", PrivateKey: kp.PrivateKey, Subnet: netip.MustParsePrefix("10.8.0.0/24"), Keepalive: tc.k})
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field {
				t.Fatalf("server: %v, want a ConfigError for %s", err, tc.field)
			}
			_, err = NewClient(ClientConfig{ServerURL: "wss://127.0.0.1:8443", ServerPublicKey: kp.PublicKey, PrivateKey: kp.PrivateKey, PublicKey: kp.PublicKey, Keepalive: tc.k})
			if !errors.As(err, &ce) || ce.Field != tc.field {
				t.Fatalf("client: %v, want a ConfigError for %s", err, tc.field)
			}
		})
	}
}

// TestKeepaliveConfigReachesTheEstimator: the JSON field loads strictly and
// becomes the sessions' estimator config on both sides.
func TestKeepaliveConfigReachesTheEstimator(t *testing.T) {
	kp, err := GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	cfg := ServerConfig{
		ListenAddr: "127.0.0.1:0", PrivateKey: kp.PrivateKey, Subnet: netip.MustParsePrefix("10.8.0.0/24"),
		Keepalive: KeepaliveConfig{HealthyIntervalMs: 20_000, DegradedIntervalMs: 10_000, CriticalIntervalMs: 2_000, DeadPeerTimeoutMs: 45_000},
	}
	path := filepath.Join(t.TempDir(), "hub.json")
	if err := cfg.Save(path); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadServerConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(loaded)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.telemetry; got.HealthyInterval != 20*time.Second || got.DegradedInterval != 10*time.Second || got.CriticalInterval != 2*time.Second || got.DeadAfter != 45*time.Second {
		t.Fatalf("hub estimator config %+v", got)
	}
	if err := os.WriteFile(path, []byte(`{"listenAddr":"127.0.0.1:0","subnet":"10.8.0.0/24","keepalive":{"deadPeerTimeout":5}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var ce *ConfigError
	if _, err := LoadServerConfig(path); !errors.As(err, &ce) || ce.Field != "keepalive.deadPeerTimeout" {
		t.Fatalf("unknown keepalive field: %v, want a ConfigError naming keepalive.deadPeerTimeout", err)
	}
	c, err := NewClient(ClientConfig{ServerURL: "wss://127.0.0.1:8443", ServerPublicKey: kp.PublicKey, PrivateKey: kp.PrivateKey, PublicKey: kp.PublicKey, Keepalive: KeepaliveConfig{DeadPeerTimeoutMs: 300_000}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.telemetry.DeadAfter != 5*time.Minute {
		t.Fatalf("client estimator DeadAfter %v", c.telemetry.DeadAfter)
	}
}
