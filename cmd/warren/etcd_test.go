package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/warrenvpn/warren/etcdstore"
)

// startEtcd runs a real etcd in the test process on loopback ports and a
// temporary directory (as etcdstore's tests do), stopped by the test's
// cleanup, and returns its client URL.
func startEtcd(t *testing.T) string {
	t.Helper()
	port := func() int {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port
	}
	clientURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port())}
	peerURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port())}
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = t.TempDir()
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{"stderr"}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("starting etcd: %v", err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		t.Fatal("etcd not ready after 60 s")
	}
	return clientURL.String()
}

func TestHubsShareARegistryInEtcd(t *testing.T) {
	ep := startEtcd(t)
	const prefix = "/cli-test/"
	var hubs []*process
	var socks []string
	for _, id := range []string{"a", "b"} {
		dir := hubDir(t)
		cfg := writeHubConfig(t, dir, map[string]any{"transportMode": "websocket"})
		hub, sock := startHub(t, dir, "--config", cfg, "--etcd-endpoints", ep, "--etcd-prefix", prefix, "--hub-id", id)
		hubs, socks = append(hubs, hub), append(socks, sock)
	}

	// A client created through hub A's admin API is in etcd.
	dir := hubDir(t)
	created := filepath.Join(dir, "c.json")
	mustWarren(t, "client", "create", "c", "--admin-socket", socks[0], "--out", created)
	store, err := etcdstore.New(etcdstore.Config{Endpoints: []string{ep}, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	entries, err := store.Load(context.Background())
	if err != nil || len(entries) != 1 || entries[0].ClientID != "c" {
		t.Fatalf("etcd after creating c on hub A: %+v, %v", entries, err)
	}

	// Hub B knows it, and the client connects to B with B's bundle and
	// the private key A made.
	var bundle map[string]any
	eventually(t, "hub B to know client c", 30*time.Second, func() bool {
		out, _, code := runWarren(t, "", "client", "export", "c", "--admin-socket", socks[1])
		return code == 0 && json.Unmarshal([]byte(out), &bundle) == nil
	})
	var fromA map[string]any
	b, err := os.ReadFile(created)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &fromA); err != nil {
		t.Fatal(err)
	}
	if bundle["serverUrl"] == fromA["serverUrl"] {
		t.Fatalf("hubs A and B have one server URL %v", bundle["serverUrl"])
	}
	bundle["privateKey"] = fromA["privateKey"]
	toB := filepath.Join(dir, "b.json")
	if b, err = json.Marshal(bundle); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(toB, b, 0o600); err != nil {
		t.Fatal(err)
	}
	conn := start(t, "connect", "--config", toB)
	eventually(t, "warren connect to hub B", time.Minute, func() bool {
		select {
		case <-conn.done:
			t.Fatalf("warren connect exited: %v\n%s\n%s", conn.err, conn.stdout, conn.stderr)
		default:
		}
		return strings.Contains(conn.stdout.String(), "connected as 10.99.0.2/24 over websocket")
	})
	if status := mustWarren(t, "status", "--admin-socket", socks[1]); !strings.Contains(status, "1 live sessions") {
		t.Fatalf("hub B's status with c connected:\n%s", status)
	}

	conn.cmd.Process.Signal(syscall.SIGINT)
	if code := conn.wait(t, time.Minute); code != 0 {
		t.Fatalf("warren connect exit %d after SIGINT\n%s", code, conn.stderr)
	}
	for _, hub := range hubs {
		hub.cmd.Process.Signal(syscall.SIGTERM)
		if code := hub.wait(t, time.Minute); code != 0 {
			t.Fatalf("hub exit %d\n%s", code, hub.stderr)
		}
	}
}

func TestHubEtcdFlags(t *testing.T) {
	dir := hubDir(t)
	cfg := writeHubConfig(t, dir, nil)

	// Both registries at once, or etcd settings without etcd, are usage errors.
	for _, args := range [][]string{
		{"--registry", filepath.Join(dir, "r.json"), "--etcd-endpoints", "http://127.0.0.1:2379"},
		{"--hub-id", "a"},
		{"--etcd-prefix", "/x/"},
	} {
		_, errOut, code := runWarren(t, "", append([]string{"hub", "--admin-socket", "", "--config", cfg}, args...)...)
		if code != 2 || strings.Count(errOut, "\n") != 1 {
			t.Fatalf("warren hub %v: exit %d, want 2; stderr:\n%s", args, code, errOut)
		}
	}

	// An etcd that does not answer stops the start with an error naming it.
	ep := "http://" + freeAddr(t)
	_, errOut, code := runWarren(t, "", "hub", "--admin-socket", "", "--config", cfg, "--etcd-endpoints", ep)
	if code != 1 || !strings.Contains(errOut, ep) {
		t.Fatalf("warren hub with no etcd at %s: exit %d, want 1; stderr:\n%s", ep, code, errOut)
	}
}
