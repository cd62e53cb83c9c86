package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/warrenvpn/warren"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// proxyFixture is a hub on loopback with the proxy in front of it, served by
// an httptest server (also loopback).
type proxyFixture struct {
	hub   *warren.Server
	proxy *Proxy
	web   *httptest.Server
}

func newProxyFixture(t *testing.T) *proxyFixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	hub, err := startHub(ctx, "127.0.0.1:0", "", logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hub.Close() })
	p, err := NewProxy(hub, "vpn.localhost", 8080)
	if err != nil {
		t.Fatal(err)
	}
	web := httptest.NewServer(p)
	t.Cleanup(func() {
		web.Close()
		p.Close()
	})
	return &proxyFixture{hub: hub, proxy: p, web: web}
}

func (f *proxyFixture) backend(t *testing.T, id, page string) *backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := startBackend(ctx, f.hub, id, 8080, pageHandler(page))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// get requests path from the proxy with the given Host header.
func (f *proxyFixture) get(t *testing.T, host, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.web.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	hc := f.web.Client()
	hc.Timeout = 15 * time.Second
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestProxyRoutesEachHostToItsClient(t *testing.T) {
	f := newProxyFixture(t)
	f.backend(t, "alice", "alice's page")
	f.backend(t, "bob", "bob's page")

	for _, tc := range []struct{ host, path, want string }{
		{"alice.vpn.localhost", "/", "alice's page\nHost: alice.vpn.localhost, path /,"},
		{"bob.vpn.localhost", "/x/y", "bob's page\nHost: bob.vpn.localhost, path /x/y,"},
		{"Alice.VPN.localhost:8000", "/", "alice's page\nHost: Alice.VPN.localhost:8000, path /,"},
		{"bob.vpn.localhost.", "/again", "bob's page\nHost: bob.vpn.localhost., path /again,"},
	} {
		code, body := f.get(t, tc.host, tc.path)
		if code != http.StatusOK || !strings.HasPrefix(body, tc.want) {
			t.Errorf("GET %s%s: %d %q, want 200 %q...", tc.host, tc.path, code, body, tc.want)
		}
		// The service sees the hub's tunnel address as the peer, and the
		// real client in X-Forwarded-For.
		if !strings.Contains(body, "from "+f.hub.HubIP().String()+":") || !strings.Contains(body, "X-Forwarded-For: 127.0.0.1") {
			t.Errorf("GET %s%s: body %q lacks the hub as peer or the forwarded-for header", tc.host, tc.path, body)
		}
	}
}

func TestProxyAnswers404ForHostsThatNameNoClient(t *testing.T) {
	f := newProxyFixture(t)
	f.backend(t, "alice", "alice's page")
	for _, host := range []string{
		"carol.vpn.localhost",      // not registered
		"vpn.localhost",            // no client label
		"x.alice.vpn.localhost",    // not one label
		"alice.example.com",        // another domain
		"alice.vpn.localhost.evil", // suffix does not match
		"127.0.0.1",                // an address
	} {
		if code, body := f.get(t, host, "/"); code != http.StatusNotFound {
			t.Errorf("GET %s: %d %q, want 404", host, code, body)
		}
	}
}

func TestProxyAnswers502ForDisconnectedClient(t *testing.T) {
	f := newProxyFixture(t)
	f.backend(t, "alice", "alice's page")
	bob := f.backend(t, "bob", "bob's page")
	if code, body := f.get(t, "bob.vpn.localhost", "/"); code != http.StatusOK {
		t.Fatalf("bob while connected: %d %q", code, body)
	}

	if err := bob.Client.Disconnect(); err != nil {
		t.Fatal(err)
	}
	// The hub ends its side of the session once it reads the Disconnect.
	deadline := time.Now().Add(10 * time.Second)
	for connected(f.hub, "bob") {
		if time.Now().After(deadline) {
			t.Fatal("hub still lists bob's session")
		}
		time.Sleep(10 * time.Millisecond)
	}
	code, body := f.get(t, "bob.vpn.localhost", "/")
	if code != http.StatusBadGateway || !strings.Contains(body, "not connected") || !strings.Contains(body, `"bob"`) {
		t.Fatalf("bob after disconnect: %d %q, want 502 saying bob is not connected", code, body)
	}
	// The others are unaffected.
	if code, body := f.get(t, "alice.vpn.localhost", "/"); code != http.StatusOK || !strings.HasPrefix(body, "alice's page") {
		t.Fatalf("alice: %d %q", code, body)
	}
}

func TestProxyAnswers502WhenClientServesNothingOnPort(t *testing.T) {
	f := newProxyFixture(t)
	b := f.backend(t, "alice", "alice's page")
	b.srv.Close() // the client stays connected; its port 8080 now refuses
	<-b.served
	code, body := f.get(t, "alice.vpn.localhost", "/")
	if code != http.StatusBadGateway || !strings.Contains(body, "nothing listens on port 8080") {
		t.Fatalf("got %d %q, want 502 naming the port", code, body)
	}
}

func TestRunDemoPrintsPageFetchedThroughProxy(t *testing.T) {
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := run(ctx, options{listen: "127.0.0.1:0", hub: "127.0.0.1:0", domain: "vpn.localhost", port: 8080, demo: true}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "200 OK\nhello from the demo client\nHost: demo.vpn.localhost,") {
		t.Fatalf("output lacks the demo page:\n%s", out.String())
	}
}

func connected(hub *warren.Server, id string) bool {
	for _, c := range hub.ListClients() {
		if c.ClientID == id {
			return true
		}
	}
	return false
}
