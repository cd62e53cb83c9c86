// Package caddy runs a Warren hub inside Caddy, so the reverse proxy that
// already serves a site reaches services that run behind VPN clients:
//
//   - the app "warren" (apps.warren in JSON, the global option warren in a
//     Caddyfile) runs one hub;
//   - the HTTP handler "warren_hub" (http.handlers.warren_hub) serves the
//     hub's WebSocket endpoint on a route of Caddy's own server, so the hub
//     shares port 443 and the site's certificate (ACME, or tls internal), and
//     clients verify it through WebPKI (or ClientConfig.ServerCA, for Caddy's
//     internal CA, whose root the hub's bundles carry: see internalCARoot)
//     instead of a pin;
//   - the reverse_proxy transport "warren"
//     (http.reverse_proxy.transport.warren) dials upstreams through the hub
//     (Server.Dial), so "reverse_proxy 10.8.0.2:8080" or
//     "reverse_proxy alice:8080" (a client ID, resolved by the hub to its
//     address) reaches a service on a client's tunnel address, with Caddy's
//     load balancing, health checks and retries as usual.
//
// It is a Go module of its own, so programs that import Warren never link
// Caddy. Build Caddy with it: xcaddy build --with github.com/warrenvpn/warren/caddy.
//
// # Config reloads
//
// Caddy reloads often, and builds every app anew each time. The hub lives in
// a package-level pool (caddy.UsagePool) keyed by a hash of its config: a
// reload whose warren config is unchanged (byte for byte after decoding: the
// same ServerConfig and registry file) keeps the running hub, with its live
// sessions, its registry and its counters; only the routes around it change.
// A reload that changes the warren config starts a new hub and closes the old
// one (a graceful stop: every client gets a Disconnect and reconnects to the
// new hub); the registry survives because it is in a file (registryFile), and
// clients the API created, disabled or changed stay so. While both hubs run,
// during the reload, the new hub already serves the routes, so a fixed
// listenAddr or wgListenPort of the hub's own cannot be held by both: change
// such a hub's config with a restart, or give it no port of its own (the
// default here: transportMode websocket, served by warren_hub).
package caddy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddypki"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/caddyserver/certmagic"

	"github.com/warrenvpn/warren"
)

func init() {
	caddy.RegisterModule(App{})
}

// hubs holds the running hubs, keyed by the hash of their config, across
// config reloads.
var hubs = caddy.NewUsagePool()

// App is the Caddy app "warren": one Warren hub. Its JSON is a
// warren.ServerConfig (the same camelCase fields as the hub's config file,
// read as strictly) plus the fields below. Its defaults differ from the
// library's where Caddy is in front: transportMode websocket (served by the
// warren_hub handler on Caddy's port; QUIC would need a UDP port and
// certificate of its own) and forwardingMode socket (the hub's own tunnel
// address, for the reverse_proxy transport).
type App struct {
	// RegistryFile is where the registry is kept; empty:
	// <Caddy's data directory>/warren/registry.json. Clients from the
	// config's "clients" are added to it when not there yet.
	RegistryFile string `json:"registryFile,omitempty"`

	// Hub is the hub's config: every member of apps.warren that is not one
	// of App's own fields.
	Hub json.RawMessage `json:"-"`

	key string
	hub *pooledHub
}

// appFields are the members of apps.warren that App reads itself.
var appFields = map[string]bool{"registryFile": true}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "warren",
		New: func() caddy.Module { return new(App) },
	}
}

// UnmarshalJSON reads App's own fields and keeps the rest, the hub's config,
// for Provision.
func (a *App) UnmarshalJSON(b []byte) error {
	own, hub, err := splitObject(b, appFields)
	if err != nil {
		return fmt.Errorf("warren: apps.warren: %w", err)
	}
	type plain App
	var p plain
	dec := json.NewDecoder(bytes.NewReader(own))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return fmt.Errorf("warren: apps.warren: %w", err)
	}
	*a = App(p)
	a.Hub = hub
	return nil
}

// MarshalJSON writes the hub's config and App's own fields as one object.
func (a App) MarshalJSON() ([]byte, error) {
	type plain App
	own, err := json.Marshal(plain(a))
	if err != nil {
		return nil, err
	}
	return mergeObjects(a.Hub, own)
}

// Provision decodes the hub's config and takes the hub from the pool, making
// it if no hub with this config runs.
func (a *App) Provision(ctx caddy.Context) error {
	hubJSON := a.Hub
	if len(bytes.TrimSpace(hubJSON)) == 0 {
		hubJSON = []byte("{}")
	}
	cfg, err := warren.ParseServerConfig(hubJSON)
	if err != nil {
		return fmt.Errorf("warren: apps.warren: %w", err)
	}
	if cfg.TransportMode == "" {
		cfg.TransportMode = warren.TransportWebSocket
	}
	if cfg.ForwardingMode == "" {
		cfg.ForwardingMode = warren.ForwardSocket
	}
	if a.RegistryFile == "" {
		a.RegistryFile = filepath.Join(caddy.AppDataDir(), "warren", "registry.json")
	}
	if cfg.BundleServerCA == "" && cfg.ListenAddr == "" {
		root, err := internalCARoot(ctx, cfg.PublicEndpoint)
		if err != nil {
			return fmt.Errorf("warren: apps.warren: bundleServerCa from Caddy's internal CA: %w", err)
		}
		cfg.BundleServerCA = root
	}
	canon, err := json.Marshal(struct {
		Hub          warren.ServerConfig
		RegistryFile string
	}{cfg, a.RegistryFile})
	if err != nil {
		return fmt.Errorf("warren: hashing config: %w", err)
	}
	sum := sha256.Sum256(canon)
	a.key = hex.EncodeToString(sum[:])

	log := ctx.Slogger()
	val, loaded, err := hubs.LoadOrNew(a.key, func() (caddy.Destructor, error) {
		if err := os.MkdirAll(filepath.Dir(a.RegistryFile), 0o700); err != nil {
			return nil, fmt.Errorf("warren: registry directory: %w", err)
		}
		store, err := warren.NewFileStore(a.RegistryFile)
		if err != nil {
			return nil, fmt.Errorf("warren: registry: %w", err)
		}
		cfg.Store = store
		cfg.Logger = log
		srv, err := warren.NewServer(cfg)
		if err != nil {
			return nil, err
		}
		return &pooledHub{srv: srv}, nil
	})
	if err != nil {
		return err
	}
	a.hub = val.(*pooledHub)
	if loaded {
		log.Info("warren: config unchanged, keeping the running hub and its sessions")
	}
	return nil
}

// internalCARoot returns, as PEM, the root certificate of Caddy's internal
// CA when Caddy's internal issuer makes the certificate of endpoint's host
// (the hub's publicEndpoint, wss://host/path): a tls automation policy for
// the host whose one issuer is internal (tls internal), or, with no policy
// for it, a name that gets no public certificate (localhost, an IP address,
// *.internal), which Caddy issues internally by default. Otherwise it
// returns "": the certificate is a public CA's, which the system roots
// verify, or one loaded from files, whose CA bundleServerCa must name.
func internalCARoot(ctx caddy.Context, endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "wss" || u.Hostname() == "" {
		return "", nil // no route of Caddy's: the hub's own listener, or none
	}
	host := u.Hostname()
	caID, internal := "", !certmagic.SubjectQualifiesForPublicCert(host)
	if internal {
		caID = caddypki.DefaultCAID
	}
	v, err := ctx.AppIfConfigured("tls")
	switch {
	case errors.Is(err, caddy.ErrNotConfigured):
		// No tls app of the config's own: the http app's automatic HTTPS
		// uses Caddy's defaults.
	case err != nil:
		return "", err
	default:
		if id, ok, matched := policyIssuer(v.(*caddytls.TLS), host); matched {
			caID, internal = id, ok
		}
	}
	if !internal {
		return "", nil
	}
	v, err = ctx.App("pki")
	if err != nil {
		return "", err
	}
	ca, err := v.(*caddypki.PKI).GetCA(ctx, caID)
	if err != nil {
		return "", err
	}
	root := ca.RootCertificate()
	if root == nil {
		return "", fmt.Errorf("the CA %q has no root certificate", caID)
	}
	ctx.Slogger().Info("warren: bundles carry the root of Caddy's internal CA as serverCa", "ca", caID, "host", host)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw})), nil
}

// policyIssuer finds, as Caddy does, the first automation policy of the tls
// app that applies to host (matched), and reports whether its one issuer is
// internal and which CA that issuer uses.
func policyIssuer(t *caddytls.TLS, host string) (caID string, internal, matched bool) {
	if t.Automation == nil {
		return "", false, false
	}
	for _, ap := range t.Automation.Policies {
		subjects := ap.Subjects()
		if len(subjects) > 0 && !slices.ContainsFunc(subjects, func(s string) bool { return certmagic.MatchWildcard(host, s) }) {
			continue
		}
		if len(ap.Issuers) != 1 {
			return "", false, true
		}
		iss, ok := ap.Issuers[0].(*caddytls.InternalIssuer)
		if !ok {
			return "", false, true
		}
		if iss.CA == "" {
			return caddypki.DefaultCAID, true, true
		}
		return iss.CA, true, true
	}
	return "", false, false
}

// Start starts the hub, unless it runs already (a reload that kept it).
func (a *App) Start() error {
	return a.hub.start()
}

// Stop does nothing: the hub outlives a config whose successor uses the same
// hub config, and Cleanup lets it go otherwise.
func (a *App) Stop() error { return nil }

// Cleanup releases this config's hold on the hub; the last one closes it.
func (a *App) Cleanup() error {
	if a.key == "" {
		return nil
	}
	_, err := hubs.Delete(a.key)
	return err
}

// Server returns the app's hub.
func (a *App) Server() *warren.Server { return a.hub.srv }

// pooledHub is a hub in the pool.
type pooledHub struct {
	srv *warren.Server

	mu      sync.Mutex
	started bool
}

// start starts the hub once.
func (p *pooledHub) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		return nil
	}
	if err := p.srv.Start(context.Background()); err != nil {
		return err
	}
	p.started = true
	return nil
}

// Destruct closes the hub when no config uses it any more.
func (p *pooledHub) Destruct() error {
	return p.srv.Close()
}

// hubApp returns the warren app of ctx's config.
func hubApp(ctx caddy.Context) (*App, error) {
	v, err := ctx.App("warren")
	if err != nil {
		return nil, fmt.Errorf("warren: the warren app (apps.warren, or the global option warren): %w", err)
	}
	return v.(*App), nil
}

// Interface guards.
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
	_ json.Unmarshaler   = (*App)(nil)
)
