package main

import (
	"bytes"
	"maps"
	"regexp"
	"slices"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestQuickstart runs the README's first command in-process and checks what
// came back through the tunnel: each client's transport, as the client and
// the hub see it, every HTTP page and every UDP echo.
func TestQuickstart(t *testing.T) {
	var out bytes.Buffer
	res, err := run(&out)
	t.Logf("output:\n%s", &out)
	if err != nil {
		t.Fatal(err)
	}

	wantTransports := map[string]string{"alice": "quic", "bob": "websocket", "carol": "wireguard"}
	if !maps.Equal(res.Transports, wantTransports) {
		t.Errorf("transports the clients connected over: %v, want %v", res.Transports, wantTransports)
	}
	if !maps.Equal(res.HubTransports, wantTransports) {
		t.Errorf("transports of the hub's sessions: %v, want %v", res.HubTransports, wantTransports)
	}

	wantPages := []struct {
		who  string
		url  *regexp.Regexp
		body *regexp.Regexp
	}{
		// Through the hub's NAT to the host's web server, over QUIC and WireGuard.
		{"alice", regexp.MustCompile(`^http://127\.0\.0\.1:\d+/$`), regexp.MustCompile(`^hello from the host's 127\.0\.0\.1$`)},
		{"carol", regexp.MustCompile(`^http://127\.0\.0\.1:\d+/$`), regexp.MustCompile(`^hello from the host's 127\.0\.0\.1$`)},
		// From the hub's tunnel address to alice's.
		{"hub", regexp.MustCompile(`^http://10\.8\.0\.2:8080/$`), regexp.MustCompile(`^hello from alice's tunnel address, you are 10\.8\.0\.1:\d+$`)},
	}
	if len(res.Pages) != len(wantPages) {
		t.Fatalf("fetched %d pages, want %d: %+v", len(res.Pages), len(wantPages), res.Pages)
	}
	for i, w := range wantPages {
		p := res.Pages[i]
		if p.Who != w.who || !w.url.MatchString(p.URL) || !w.body.MatchString(p.Body) {
			t.Errorf("page %d: %s GET %s: %q; want %s GET %s: %s", i, p.Who, p.URL, p.Body, w.who, w.url, w.body)
		}
	}

	wantEchoes := []echo{
		{"alice", "datagram 1 from alice", "bob got: datagram 1 from alice"},
		{"alice", "datagram 2 from alice", "bob got: datagram 2 from alice"},
		{"alice", "datagram 3 from alice", "bob got: datagram 3 from alice"},
		{"carol", "datagram 1 from carol", "bob got: datagram 1 from carol"},
	}
	if !slices.Equal(res.Echoes, wantEchoes) {
		t.Errorf("UDP echoes: %q, want %q", res.Echoes, wantEchoes)
	}
}
