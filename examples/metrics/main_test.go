package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestServesWarrenMetrics runs the example on a free port, scrapes
// /metrics and finds the hub's series: sessions by transport, handshakes,
// traffic, and alice's per-client series.
func TestServesWarrenMetrics(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	urls := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, "127.0.0.1:0", true, func(u string) { urls <- u }) }()
	var url string
	select {
	case url = <-urls:
	case err := <-done:
		cancel()
		t.Fatalf("run: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("the example did not start serving")
	}
	resp, err := http.Get(url)
	if err != nil {
		cancel()
		<-done
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	cancel()
	if rerr := <-done; rerr != nil {
		t.Errorf("run: %v", rerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	text := string(body)
	for _, want := range []string{
		`warren_sessions{transport="websocket"} 1`,
		`warren_sessions_opened_total{transport="websocket"} 1`,
		`warren_handshakes_total{result="ok"} 1`,
		`warren_received_packets_total `,
		`warren_dropped_packets_total{reason="spoofed"} 0`,
		`warren_client_sent_bytes_total{client="alice"}`,
		`warren_client_link_health{client="alice",health=`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q in /metrics:\n%s", want, text)
		}
	}
	if t.Failed() {
		return
	}
	t.Logf("%d bytes of metrics, %d warren_ lines", len(text), strings.Count(text, "\nwarren_"))
}
