package caddy

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(Handler{})
	httpcaddyfile.RegisterHandlerDirective("warren_hub", parseHandler)
	// Before reverse_proxy, so a site can serve the hub on a path and
	// proxy the rest.
	httpcaddyfile.RegisterDirectiveOrder("warren_hub", httpcaddyfile.Before, "reverse_proxy")
}

// Handler is the HTTP handler "warren_hub": it serves the warren app's
// WebSocket endpoint (warren.Server.WebSocketHandler) on the route it is on.
// Every request it gets is taken as a WebSocket upgrade for the hub: a
// request that is not one is answered 400, and it never calls the next
// handler. Put it on a route of its own (a host, or a path such as /warren)
// and set the app's publicEndpoint to that URL, so client bundles name it.
//
// The connection's source address is the request's RemoteAddr as Caddy sets
// it: the socket's peer, or the PROXY header's source with Caddy's
// proxy_protocol listener wrapper. The app's connectionIpBlockList refuses it
// with 403 before the upgrade; Caddy's own timeouts bound the TLS handshake
// and the request header (see warren.Server.WebSocketHandler).
type Handler struct {
	h http.Handler
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.warren_hub",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision finds the warren app's hub.
func (h *Handler) Provision(ctx caddy.Context) error {
	app, err := hubApp(ctx)
	if err != nil {
		return err
	}
	h.h = app.Server().WebSocketHandler()
	return nil
}

// ServeHTTP hands the request to the hub.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	h.h.ServeHTTP(w, r)
	return nil
}

// UnmarshalCaddyfile reads "warren_hub", which takes no arguments.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive's name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("warren_hub takes no options (the hub's config is the global option warren)")
	}
	return nil
}

func parseHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var m Handler
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return &m, err
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
