package caddy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/warrenvpn/warren"
)

func init() {
	caddy.RegisterModule(Transport{})
}

// Transport is the reverse_proxy transport "warren": Caddy's HTTP transport
// (every option of "transport http" that concerns HTTP: keepalive, timeouts,
// tls to the upstream, versions 1.1, 2 and h2c, buffers, compression) whose
// connections are dialled by the warren app's hub (warren.Server.Dial), from
// the hub's tunnel address to the upstream's. An upstream is a tunnel
// address and port (10.8.0.2:8080), or a registered client's ID and a port
// (alice:8080), which the hub resolves to the client's assigned address at
// every dial. Load balancing, retries and passive and active health checks
// work as with any transport: a dial to a client that is not connected (or is
// disabled) fails at once as a dial error, which Caddy retries on another
// upstream and counts against the upstream's health.
//
// Options that would dial around the hub are refused: local_address,
// resolver, proxy_protocol, network_proxy (forward proxies), versions 3
// (HTTP/3 needs UDP sockets of Caddy's own) and a tls server_name with
// placeholders. dial_timeout bounds the dial through the tunnel (default
// 3 s).
type Transport struct {
	reverseproxy.HTTPTransport

	srv   *warren.Server
	unsub func()
	done  chan struct{}
}

// CaddyModule returns the Caddy module information.
func (Transport) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.transport.warren",
		New: func() caddy.Module { return new(Transport) },
	}
}

// Provision sets up Caddy's HTTP transport and makes it dial through the hub.
func (t *Transport) Provision(ctx caddy.Context) error {
	switch {
	case t.LocalAddress != "":
		return refused("local_address")
	case t.Resolver != nil:
		return refused("resolver")
	case t.ProxyProtocol != "":
		return refused("proxy_protocol")
	case len(t.NetworkProxyRaw) > 0:
		return refused("network_proxy")
	case t.FallbackDelay != 0:
		return refused("dial_fallback_delay")
	case slices.Contains(t.Versions, "3"):
		return refused("versions 3")
	case t.TLS != nil && strings.Contains(t.TLS.ServerName, "{"):
		return refused("tls_server_name with placeholders")
	}
	app, err := hubApp(ctx)
	if err != nil {
		return err
	}
	t.srv = app.Server()
	if err := t.HTTPTransport.Provision(ctx); err != nil {
		return err
	}
	t.Transport.DialContext = t.dial
	t.Transport.Proxy = nil // no forward proxy: the hub is the way

	// A pooled connection to a client whose session ended leads nowhere:
	// the hub's stack sends into a route that is gone and nothing answers,
	// so a request on it would wait out its timeout. Drop idle connections
	// when a client disconnects; new ones are dialled afresh.
	events, unsub := t.srv.Subscribe()
	t.unsub, t.done = unsub, make(chan struct{})
	go func() {
		defer close(t.done)
		for e := range events {
			if _, ok := e.(warren.ClientDisconnected); ok {
				t.Transport.CloseIdleConnections()
			}
		}
	}()
	return nil
}

// Cleanup stops watching the hub's events and closes idle connections.
func (t *Transport) Cleanup() error {
	if t.unsub != nil {
		t.unsub()
		<-t.done
	}
	if t.Transport != nil {
		t.Transport.CloseIdleConnections()
	}
	return nil
}

func refused(option string) error {
	return fmt.Errorf("warren transport: %s is not supported: connections go through the Warren hub", option)
}

// dial connects to addr through the hub. A host that is not an IP address is
// a client ID.
func (t *Transport) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if info, ok := reverseproxy.GetDialInfo(ctx); ok && !strings.HasPrefix(info.Network, "unix") {
		network, addr = info.Network, info.Address
	}
	conn, err := t.dialHub(ctx, network, addr)
	if err != nil {
		// Marks the error as a dial error, which reverse_proxy retries.
		return nil, reverseproxy.NewDialError(err)
	}
	return conn, nil
}

func (t *Transport) dialHub(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("warren transport: upstream %q: %w", addr, err)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		e, err := t.srv.GetClient(ctx, host)
		if err != nil {
			return nil, fmt.Errorf("warren transport: upstream %q: %w", addr, err)
		}
		if !e.Enabled {
			return nil, fmt.Errorf("warren transport: upstream %q: %w", addr, warren.ErrClientDisabled)
		}
		addr = net.JoinHostPort(e.AssignedIP.String(), port)
	}
	if d := time.Duration(t.DialTimeout); d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	return t.srv.Dial(ctx, network, addr)
}

// UnmarshalCaddyfile reads "transport warren { ... }" with the options of
// "transport http".
func (t *Transport) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return t.HTTPTransport.UnmarshalCaddyfile(d)
}

// Interface guards.
var (
	_ caddy.Provisioner     = (*Transport)(nil)
	_ caddy.CleanerUpper    = (*Transport)(nil)
	_ http.RoundTripper     = (*Transport)(nil)
	_ caddyfile.Unmarshaler = (*Transport)(nil)
)
