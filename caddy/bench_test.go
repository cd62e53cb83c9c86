package caddy

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// BenchmarkRequests measures requests per second through Caddy to one small
// HTTP service, two ways in the same run: through the tunnel (Caddy →
// warren transport → hub → WebSocket session → client netstack → service)
// and directly (Caddy → loopback → the same handler). One client, requests
// one after another over keep-alive connections: the figure is latency-bound.
//
//	cd caddy && go test -run '^$' -bench Requests -benchmem
func BenchmarkRequests(b *testing.B) {
	s := newSite(b)
	body := []byte("hello from the service\n")
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	direct := &http.Server{Handler: handler}
	go direct.Serve(ln)
	b.Cleanup(func() { direct.Close() })
	s.direct = ln.Addr().String()
	s.load(b)
	c := s.connectClient(b)
	tln, err := c.Listen("tcp", ":8081")
	if err != nil {
		b.Fatal(err)
	}
	tunnel := &http.Server{Handler: handler}
	go tunnel.Serve(tln)
	b.Cleanup(func() { tunnel.Close() })
	s.upstream = "alice:8081"
	s.load(b) // the same hub: only the route changes
	hc := s.httpClient(b)
	waitStatus(b, hc, s.siteURL()+"/", http.StatusOK)

	for _, bc := range []struct{ name, path string }{
		{"caddy-tunnel-client", "/t"},
		{"caddy-loopback", "/direct/t"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			url := s.siteURL() + bc.path
			start := time.Now()
			for b.Loop() {
				resp, err := hc.Get(url)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, resp.Body); err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
		})
	}
}
