package caddy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"go.uber.org/goleak"

	"github.com/warrenvpn/warren"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, caddyGoroutines...)
}

// caddyGoroutines are goroutines of Caddy's that outlive caddy.Stop by
// design, so they are not leaks of the hub's or of a test.
var caddyGoroutines = []goleak.Option{
	// certmagic keeps a lock file fresh while it obtains a certificate
	// (the internal CA's issuance here); the goroutine sleeps 5 s between
	// checks and ends at the first check after the lock is released.
	goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"),
}

// freePort returns a TCP port on loopback that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// site describes one Caddy config of the tests.
type site struct {
	dir        string // Caddy's storage and the registry
	httpsPort  int
	httpPort   int
	hubKey     warren.Keypair
	clientKey  warren.Keypair
	upstream   string // reverse_proxy's upstream
	extraRoute string // a path answered "extra" (changes the routes, not the hub)
	mtu        int    // the hub's MTU: a change of the hub's config
	direct     string // if set, /direct/* is proxied to this address on loopback, not through the hub
	publicHost string // the publicEndpoint's host, if not localhost
}

func newSite(t testing.TB) *site {
	t.Helper()
	hub, err := warren.GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	client, err := warren.GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	return &site{dir: t.TempDir(), httpsPort: freePort(t), httpPort: freePort(t), hubKey: hub, clientKey: client, upstream: "alice:8080"}
}

func (s *site) hubURL() string { return fmt.Sprintf("wss://localhost:%d/warren", s.httpsPort) }

// publicEndpoint is the hub's publicEndpoint: hubURL, or on publicHost.
func (s *site) publicEndpoint() string {
	if s.publicHost != "" {
		return fmt.Sprintf("wss://%s:%d/warren", s.publicHost, s.httpsPort)
	}
	return s.hubURL()
}
func (s *site) siteURL() string {
	return fmt.Sprintf("https://localhost:%d", s.httpsPort)
}

// config is the site's Caddy JSON config: the warren app, and on
// localhost:httpsPort (tls internal) /warren served by warren_hub and
// everything else proxied to the upstream through the hub, with an active
// health check.
func (s *site) config(t testing.TB) []byte {
	t.Helper()
	warrenApp := map[string]any{
		"privateKey":     s.hubKey.PrivateKey.String(),
		"subnet":         "10.8.0.0/24",
		"publicEndpoint": s.publicEndpoint(),
		"registryFile":   filepath.Join(s.dir, "registry.json"),
		"clients": []any{map[string]any{
			"clientId": "alice", "publicKey": s.clientKey.PublicKey.String(), "assignedIp": "10.8.0.2", "enabled": true,
		}},
	}
	if s.mtu != 0 {
		warrenApp["mtu"] = s.mtu
	}
	routes := []any{
		map[string]any{"match": []any{map[string]any{"path": []string{"/warren"}}}, "handle": []any{map[string]any{"handler": "warren_hub"}}, "terminal": true},
	}
	if s.extraRoute != "" {
		routes = append(routes, map[string]any{
			"match":  []any{map[string]any{"path": []string{s.extraRoute}}},
			"handle": []any{map[string]any{"handler": "static_response", "body": "extra"}}, "terminal": true,
		})
	}
	if s.direct != "" {
		routes = append(routes, map[string]any{
			"match":  []any{map[string]any{"path": []string{"/direct/*"}}},
			"handle": []any{map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": s.direct}}}}, "terminal": true,
		})
	}
	routes = append(routes, map[string]any{"handle": []any{map[string]any{
		"handler":   "reverse_proxy",
		"transport": map[string]any{"protocol": "warren"},
		"upstreams": []any{map[string]any{"dial": s.upstream}},
		"health_checks": map[string]any{"active": map[string]any{
			"uri": "/health", "interval": "200ms", "timeout": "2s",
		}},
	}}})
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"storage": map[string]any{"module": "file_system", "root": s.dir},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
		"apps": map[string]any{
			"warren": warrenApp,
			"pki":    map[string]any{"certificate_authorities": map[string]any{"local": map[string]any{"install_trust": false}}},
			"tls": map[string]any{"automation": map[string]any{"policies": []any{map[string]any{
				"subjects": []string{"localhost"}, "issuers": []any{map[string]any{"module": "internal"}},
			}}}},
			"http": map[string]any{
				"http_port":  s.httpPort,
				"https_port": s.httpsPort,
				"servers": map[string]any{"site": map[string]any{
					"listen":          []string{fmt.Sprintf("127.0.0.1:%d", s.httpsPort)},
					"protocols":       []string{"h1", "h2"},
					"automatic_https": map[string]any{"disable_redirects": true},
					"routes": []any{map[string]any{
						"match":    []any{map[string]any{"host": []string{"localhost"}}},
						"handle":   []any{map[string]any{"handler": "subroute", "routes": routes}},
						"terminal": true,
					}},
				}},
			},
		},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// load (re)loads Caddy with the site's config; the test's end stops Caddy.
func (s *site) load(t testing.TB) {
	t.Helper()
	if err := caddy.Load(s.config(t), true); err != nil {
		t.Fatalf("caddy.Load: %v", err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
}

// rootCA is Caddy's internal root CA certificate, PEM.
func (s *site) rootCA(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, "pki", "authorities", "local", "root.crt"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitCertificate waits until Caddy's listener presents a certificate from
// its internal CA for localhost.
func (s *site) waitCertificate(t testing.TB) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(s.rootCA(t)))
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", s.httpsPort),
			&tls.Config{RootCAs: pool, ServerName: "localhost"})
		if err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Caddy's certificate for localhost: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// httpClient trusts Caddy's internal CA.
func (s *site) httpClient(t testing.TB) *http.Client {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(s.rootCA(t))) {
		t.Fatal("no certificate in Caddy's root.crt")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// currentHub is the hub in the pool; the tests run one at a time.
func currentHub(t testing.TB) *warren.Server {
	t.Helper()
	var srvs []*warren.Server
	hubs.Range(func(_, v any) bool {
		srvs = append(srvs, v.(*pooledHub).srv)
		return true
	})
	if len(srvs) != 1 {
		t.Fatalf("%d hubs in the pool, want 1", len(srvs))
	}
	return srvs[0]
}

// connectClient connects alice through Caddy's listener, trusting Caddy's
// internal CA, and serves HTTP on its tunnel address, port 8080.
func (s *site) connectClient(t testing.TB) *warren.Client {
	t.Helper()
	c, err := warren.NewClient(warren.ClientConfig{
		ServerURL:       s.hubURL(),
		ServerPublicKey: s.hubKey.PublicKey,
		PrivateKey:      s.clientKey.PrivateKey,
		ServerCA:        s.rootCA(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	connect(t, c)
	ln, err := c.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "alice %s", r.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return c
}

// connect connects c, retrying while Caddy may still be obtaining its
// certificate just after Load.
func connect(t testing.TB, c *warren.Client) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.Connect(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("client Connect through Caddy: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// get fetches path from Caddy's site and returns the status and body.
func get(t testing.TB, hc *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// waitStatus polls url until it answers want, or fails after a while.
func waitStatus(t testing.TB, hc *http.Client, url string, want int) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := get(t, hc, url)
		if code == want {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %d %q, want status %d", url, code, body, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRequestReachesServiceBehindClientThroughCaddy(t *testing.T) {
	s := newSite(t)
	s.load(t)
	s.connectClient(t)
	hc := s.httpClient(t)

	// The upstream is healthy once the active check has reached alice.
	body := waitStatus(t, hc, s.siteURL()+"/hello", http.StatusOK)
	if body != "alice /hello" {
		t.Fatalf("site answered %q, want the service behind alice", body)
	}
	hub := currentHub(t)
	list := hub.ListClients()
	if len(list) != 1 || list[0].ClientID != "alice" || list[0].RemoteAddr.Addr().String() != "127.0.0.1" {
		t.Fatalf("hub's sessions: %+v, want alice from 127.0.0.1 through Caddy's listener", list)
	}

	// A disabled client's upstream fails the active health check: Caddy
	// answers 503 (no upstream available), not 502 (a failed dial).
	if err := hub.DisableClient(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, hc, s.siteURL()+"/hello", http.StatusServiceUnavailable)
	if err := hub.EnableClient(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
}

func TestBundleConnectsThroughCaddyWithItsInternalCA(t *testing.T) {
	s := newSite(t)
	s.load(t)
	hub := currentHub(t)
	b, err := hub.CreateClient(context.Background(), warren.ClientSpec{ClientID: "carol"})
	if err != nil {
		t.Fatal(err)
	}
	if b.Config.ServerCA != s.rootCA(t) || b.Config.ServerCertHash != "" || b.Config.ServerURL != s.hubURL() {
		t.Fatalf("bundle serverUrl %q, serverCa %q, serverCertHash %q: want the route, Caddy's root and no pin",
			b.Config.ServerURL, b.Config.ServerCA, b.Config.ServerCertHash)
	}
	// The bundle as it is: nothing added by hand.
	c, err := warren.NewClient(b.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	connect(t, c)
	list := hub.ListClients()
	if len(list) != 1 || list[0].ClientID != "carol" {
		t.Fatalf("hub's sessions: %+v, want carol's", list)
	}
}

func TestBundleHasNoInternalCAForAPublicName(t *testing.T) {
	// example.com is served by no policy of the tls app here, and Caddy
	// would get it a public certificate: the system roots verify that.
	s := newSite(t)
	s.publicHost = "example.com"
	s.load(t)
	s.waitCertificate(t) // so that Caddy's storage is at rest when the test ends
	b, err := currentHub(t).CreateClient(context.Background(), warren.ClientSpec{ClientID: "carol"})
	if err != nil {
		t.Fatal(err)
	}
	if b.Config.ServerCA != "" {
		t.Fatalf("bundle serverCa %q, want none for a public name", b.Config.ServerCA)
	}
}

func TestUpstreamByTunnelAddress(t *testing.T) {
	s := newSite(t)
	s.upstream = "10.8.0.2:8080"
	s.load(t)
	s.connectClient(t)
	body := waitStatus(t, s.httpClient(t), s.siteURL()+"/by-ip", http.StatusOK)
	if body != "alice /by-ip" {
		t.Fatalf("site answered %q", body)
	}
}

func TestReloadKeepsRegistryAndConnectedClient(t *testing.T) {
	s := newSite(t)
	s.load(t)
	c := s.connectClient(t)
	hc := s.httpClient(t)
	waitStatus(t, hc, s.siteURL()+"/", http.StatusOK)
	hub := currentHub(t)
	if _, err := hub.CreateClient(context.Background(), warren.ClientSpec{ClientID: "bob"}); err != nil {
		t.Fatal(err)
	}
	before := hub.ListClients()
	events, unsub := c.Subscribe()
	defer unsub()

	// Same warren config, another route.
	s.extraRoute = "/extra"
	s.load(t)
	if code, body := get(t, hc, s.siteURL()+"/extra"); code != http.StatusOK || body != "extra" {
		t.Fatalf("new route: %d %q", code, body)
	}
	if currentHub(t) != hub {
		t.Fatal("reload with the same warren config made a new hub")
	}
	after := hub.ListClients()
	if len(after) != 1 || len(before) != 1 || !after[0].ConnectedSince.Equal(before[0].ConnectedSince) {
		t.Fatalf("sessions before %+v, after %+v: want alice's session kept", before, after)
	}
	if _, err := hub.GetClient(context.Background(), "bob"); err != nil {
		t.Fatalf("registry after reload: %v", err)
	}
	if code, body := get(t, hc, s.siteURL()+"/still"); code != http.StatusOK || body != "alice /still" {
		t.Fatalf("through the tunnel after reload: %d %q", code, body)
	}
	select {
	case e := <-events:
		if _, ok := e.(warren.ClientDisconnected); ok || strings.Contains(fmt.Sprintf("%T", e), "Reconnect") {
			t.Fatalf("client saw %T %+v during a reload that kept its hub", e, e)
		}
	default:
	}

	// Another warren config: a new hub, the registry kept in its file.
	s.mtu = 1400
	s.load(t)
	next := currentHub(t)
	if next == hub {
		t.Fatal("reload with another warren config kept the old hub")
	}
	if _, err := next.GetClient(context.Background(), "bob"); err != nil {
		t.Fatalf("registry after a reload that changed the hub: %v", err)
	}
	// The old hub was closed gracefully: alice comes back to the new one.
	waitStatus(t, hc, s.siteURL()+"/again", http.StatusOK)
}

func TestTransportRefusesOptionsThatBypassTheHub(t *testing.T) {
	s := newSite(t)
	cfg := strings.Replace(string(s.config(t)), `"protocol":"warren"`, `"protocol":"warren","local_address":"127.0.0.1"`, 1)
	err := caddy.Load([]byte(cfg), true)
	if err == nil {
		_ = caddy.Stop()
		t.Fatal("caddy.Load with local_address on the warren transport: no error")
	}
	if !strings.Contains(err.Error(), "local_address") {
		t.Errorf("error %v does not name local_address", err)
	}
}
