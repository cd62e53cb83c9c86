package ws

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/warrenvpn/warren/internal/hsguard"
)

// serveHandler runs h on /warren of an httptest TLS server (HTTP/1.1) and
// returns the server and the client TLS config that trusts its certificate
// through WebPKI (no pin). Both are closed when the test ends.
func serveHandler(t *testing.T, h *Handler) (*httptest.Server, *tls.Config) {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/warren", h)
	ts := httptest.NewTLSServer(mux)
	t.Cleanup(ts.Close)
	t.Cleanup(func() { h.Close() })
	roots := x509.NewCertPool()
	roots.AddCert(ts.Certificate())
	return ts, &tls.Config{RootCAs: roots}
}

func handlerURL(ts *httptest.Server) string {
	return "wss://" + strings.TrimPrefix(ts.URL, "https://") + "/warren"
}

func newHandler(t *testing.T, cfg HandlerConfig) *Handler {
	t.Helper()
	h, err := NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestHandlerUpgradesRequestsOfAnotherHTTPServer(t *testing.T) {
	var seen netip.Addr
	h := newHandler(t, HandlerConfig{Reject: func(a netip.Addr) bool { seen = a; return false }})
	ts, tlsConf := serveHandler(t, h)

	accepted := make(chan *Conn, 1)
	go func() {
		c, err := h.Accept(ctxTimeout(t, 10*time.Second))
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	c, err := Dial(ctxTimeout(t, 10*time.Second), handlerURL(ts), DialConfig{TLSConfig: tlsConf})
	if err != nil {
		t.Fatalf("Dial through the handler, verifying the server with RootCAs: %v", err)
	}
	defer c.Close()
	s := <-accepted
	if s == nil {
		t.FailNow()
	}
	defer s.Close()
	exchangeOne(t, c, s)

	// The real address is the request's RemoteAddr: the client's socket.
	local := c.raw.LocalAddr().(*net.TCPAddr).AddrPort()
	if s.RemoteAddr() != local {
		t.Errorf("server side RemoteAddr = %v, want the client's socket %v", s.RemoteAddr(), local)
	}
	if seen != local.Addr() {
		t.Errorf("Reject saw %v, want %v", seen, local.Addr())
	}
	// ServeHTTP leaves the pre-auth budget when it returns, just after the
	// hand-off to Accept, so the count reaches zero a moment after Accept.
	waitFor(t, "PreAuth = 0 after Accept", func() bool { return h.PreAuth() == 0 })
}

func TestHandlerRejectAnswersForbiddenBeforeUpgrade(t *testing.T) {
	h := newHandler(t, HandlerConfig{Reject: func(a netip.Addr) bool { return a.IsLoopback() }})
	ts, tlsConf := serveHandler(t, h)
	_, err := Dial(ctxTimeout(t, 10*time.Second), handlerURL(ts), DialConfig{TLSConfig: tlsConf})
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("Dial from a rejected address: err = %v, want HTTP 403", err)
	}
	if got := h.Rejected(); got != 1 {
		t.Errorf("Rejected = %d, want 1", got)
	}
}

func TestHandlerRefusesUnknownRemoteAddrWhenRejectIsSet(t *testing.T) {
	h := newHandler(t, HandlerConfig{Reject: func(netip.Addr) bool { return false }})
	defer h.Close()
	rec := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, "/warren", nil)
	r.RemoteAddr = "@" // a Unix socket's peer
	h.ServeHTTP(rec, r)
	if rec.Code != http.StatusForbidden {
		t.Errorf("status = %d, want 403 for a RemoteAddr that is no IP address", rec.Code)
	}
}

func TestHandlerAnswersPlainRequestWithBadRequest(t *testing.T) {
	h := newHandler(t, HandlerConfig{})
	ts, _ := serveHandler(t, h)
	resp, err := ts.Client().Get(ts.URL + "/warren")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("status = %d, want 400", resp.StatusCode)
	}
}

func TestHandlerCloseClosesQueuedConnectionsAndRefusesLaterOnes(t *testing.T) {
	h := newHandler(t, HandlerConfig{})
	ts, tlsConf := serveHandler(t, h)
	c, err := Dial(ctxTimeout(t, 10*time.Second), handlerURL(ts), DialConfig{TLSConfig: tlsConf})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Not accepted: Close must close it.
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	_ = c.raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.ReadMessage(); err == nil {
		t.Fatal("ReadMessage on a connection the closed handler had queued: no error")
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("queued connection still open after Close: %v", err)
	}
	if _, err := h.Accept(ctxTimeout(t, time.Second)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v, want net.ErrClosed", err)
	}
	_, err = Dial(ctxTimeout(t, 10*time.Second), handlerURL(ts), DialConfig{TLSConfig: tlsConf})
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("Dial after Close: err = %v, want HTTP 503", err)
	}
	if err := h.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
}

func TestHandlerBudgetEvictsOldestWhenQueueIsFull(t *testing.T) {
	if testing.Short() {
		t.Skip("fills the accept queue: 130 TLS handshakes")
	}
	h := newHandler(t, HandlerConfig{MaxPreAuth: 1, HandshakeTimeout: time.Minute})
	ts, tlsConf := serveHandler(t, h)
	dial := func() *Conn {
		c, err := Dial(ctxTimeout(t, 20*time.Second), handlerURL(ts), DialConfig{TLSConfig: tlsConf})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	waitPreAuth := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for h.PreAuth() != n && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	// Nobody accepts: the queue fills, and then connections wait in the
	// pre-auth budget of one. Each waits until the one before has left the
	// budget for the queue, so none is evicted on the way.
	for range acceptQueueLen {
		dial()
		waitPreAuth(0)
	}
	if h.Evicted() != 0 || len(h.queue) != acceptQueueLen {
		t.Fatalf("after filling the queue: evicted %d, queued %d", h.Evicted(), len(h.queue))
	}
	first := dial()
	waitPreAuth(1)
	if h.PreAuth() != 1 {
		t.Fatalf("PreAuth = %d, want 1 with the queue full (queued %d, evicted %d)", h.PreAuth(), len(h.queue), h.Evicted())
	}
	dial() // makes room by closing first
	_ = first.raw.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := first.ReadMessage(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("oldest waiting connection: ReadMessage err = %v, want closed by the hub", err)
	}
	if h.Evicted() != 1 {
		t.Errorf("Evicted = %d, want 1", h.Evicted())
	}
}

func TestNewHandlerRefusesNegativeBounds(t *testing.T) {
	for _, cfg := range []HandlerConfig{{MaxPreAuth: -1}, {MaxPreAuthPerSource: -1}, {HandshakeTimeout: -time.Second}} {
		if _, err := NewHandler(cfg); err == nil {
			t.Errorf("NewHandler(%+v): no error", cfg)
		}
	}
}

// wrappedWriter hides the Hijacker of the ResponseWriter it wraps, as
// Caddy's response recorders do, and offers Unwrap instead.
type wrappedWriter struct{ w http.ResponseWriter }

func (w wrappedWriter) Header() http.Header         { return w.w.Header() }
func (w wrappedWriter) Write(b []byte) (int, error) { return w.w.Write(b) }
func (w wrappedWriter) WriteHeader(code int)        { w.w.WriteHeader(code) }
func (w wrappedWriter) Unwrap() http.ResponseWriter { return w.w }

func TestHandlerHijacksThroughWrappedResponseWriter(t *testing.T) {
	h := newHandler(t, HandlerConfig{})
	mux := http.NewServeMux()
	mux.HandleFunc("/warren", func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(wrappedWriter{w}, r) })
	ts := httptest.NewTLSServer(mux)
	defer ts.Close()
	defer h.Close()
	roots := x509.NewCertPool()
	roots.AddCert(ts.Certificate())
	accepted := make(chan *Conn, 1)
	go func() {
		c, _ := h.Accept(ctxTimeout(t, 10*time.Second))
		accepted <- c
	}()
	c, err := Dial(ctxTimeout(t, 10*time.Second), handlerURL(ts), DialConfig{TLSConfig: &tls.Config{RootCAs: roots}})
	if err != nil {
		t.Fatalf("Dial through a wrapped ResponseWriter: %v", err)
	}
	defer c.Close()
	s := <-accepted
	if s == nil {
		t.Fatal("no connection accepted")
	}
	defer s.Close()
	exchangeOne(t, c, s)
}

func TestHandlerChargesSourceToGuardBeforeUpgrade(t *testing.T) {
	// An eighth of a queue of 8 is 1: one handshake in the queue puts the
	// Guard under load, and the source is charged.
	g := hsguard.New(hsguard.Config{Rate: 1, Burst: 2, QueueLen: 8})
	h := newHandler(t, HandlerConfig{Guard: g})
	defer h.Close()
	g.Enter()
	defer g.Done()
	codes := make([]int, 0, 4)
	for range 4 {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/warren", nil) // no upgrade headers
		r.RemoteAddr = "192.0.2.7:4000"
		h.ServeHTTP(rec, r)
		codes = append(codes, rec.Code)
	}
	// The burst of two passes the Guard (and fails later, as a plain
	// request); the rest are over the source's rate.
	if codes[0] == http.StatusTooManyRequests || codes[1] == http.StatusTooManyRequests ||
		codes[2] != http.StatusTooManyRequests || codes[3] != http.StatusTooManyRequests {
		t.Fatalf("status codes = %v, want the first two past the Guard and then 429", codes)
	}
	if got := g.Stats().RateLimited; got != 2 {
		t.Errorf("Guard RateLimited = %d, want 2", got)
	}
	rec := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, "/warren", nil)
	r.RemoteAddr = "192.0.2.8:4000" // another source has its own rate
	h.ServeHTTP(rec, r)
	if rec.Code == http.StatusTooManyRequests {
		t.Errorf("another source got 429")
	}
}
