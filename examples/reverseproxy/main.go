// Command reverseproxy embeds a Warren hub and an HTTP reverse proxy in one
// program: a request for http://<client-id>.<domain>/... is forwarded, through
// the tunnel, to a web service that VPN client serves on its own tunnel
// address. The clients need no public address and no open port; they only
// connect out to the hub.
//
//	go run ./examples/reverseproxy            # the self-contained demo below
//	go run ./examples/reverseproxy -serve     # the demo, then keep serving
//
// How a request travels:
//
//  1. the proxy takes the first label of the Host header (alice in
//     alice.vpn.localhost:8000) as a client ID and looks it up in the hub's
//     registry (Server.GetClient);
//  2. an unknown client gets 404; a registered client with no live session
//     gets 502 saying it is not connected;
//  3. otherwise an httputil.ReverseProxy forwards the request. Its
//     http.Transport dials with Server.Dial, from the hub's tunnel address
//     (10.8.0.1) to the client's assigned address and -port, through the
//     hub's userspace network stack (forwardingMode socket): no root, no TUN
//     device. The service sees the original Host header and the usual
//     X-Forwarded-For/-Host/-Proto headers.
//
// With -demo (the default) the program also registers a client "demo",
// connects it in-process (netstack mode), serves a page on its tunnel address,
// fetches that page through the proxy, prints it and exits.
//
// Choices worth knowing:
//
//   - Host names are case-insensitive, so the proxy lower-cases the Host
//     before matching: give clients lower-case IDs that are valid DNS labels.
//     An ID with a dot cannot be named by a single label and is not reachable.
//   - The hub's destination policy is "block": clients reach the hub and each
//     other, but the hub is not their way out to the Internet. This program
//     exists to reach services behind clients, not to be an exit node.
//   - -store keeps the registry (client IDs and their addresses) in a file.
//     The hub's keys and self-signed certificate are made afresh at every
//     start, so clients need new bundles after a restart (the demo rotates its
//     key when "demo" is already registered).
//   - Every address this program binds by default is on loopback.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/warrenvpn/warren"
)

func main() {
	var o options
	flag.StringVar(&o.listen, "listen", "127.0.0.1:8000", "HTTP listen address of the reverse proxy")
	flag.StringVar(&o.hub, "hub", "127.0.0.1:8443", "WebSocket/TLS listen address of the hub")
	flag.StringVar(&o.domain, "domain", "vpn.localhost", "base domain: <client-id>.<domain> reaches a client")
	flag.IntVar(&o.port, "port", 8080, "port of the service clients serve on their tunnel address")
	flag.StringVar(&o.store, "store", "", "file that keeps the client registry (empty: memory only)")
	flag.BoolVar(&o.demo, "demo", true, "connect an in-process client \"demo\", fetch its page through the proxy and print it")
	flag.BoolVar(&o.serve, "serve", false, "keep serving until interrupted (always on with -demo=false)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "reverseproxy:", err)
		os.Exit(1)
	}
}

// options are the command-line flags.
type options struct {
	listen, hub, domain, store string
	port                       int
	demo, serve                bool
}

// run starts the hub and the proxy, runs the demo if asked, and serves until
// ctx ends if asked.
func run(ctx context.Context, o options, out io.Writer) error {
	if o.port <= 0 || o.port > 65535 {
		return fmt.Errorf("-port %d: not a port number", o.port)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	hub, err := startHub(startCtx, o.hub, o.store, logger)
	if err != nil {
		return err
	}
	defer hub.Close()
	fmt.Fprintf(out, "hub      wss://%s, hub tunnel address %s\n", hub.Addr(), hub.HubIP())

	proxy, err := NewProxy(hub, o.domain, o.port)
	if err != nil {
		return err
	}
	defer proxy.Close()
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           proxy,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		srv.Close()
		<-served
	}()
	fmt.Fprintf(out, "proxy    http://%s/ routes <client-id>.%s to port %d of the client's tunnel address\n", ln.Addr(), proxy.domain, o.port)

	if o.demo {
		b, err := startBackend(startCtx, hub, "demo", o.port, pageHandler("hello from the demo client"))
		if err != nil {
			return err
		}
		defer b.Close()
		fmt.Fprintf(out, "client   demo connected, serving http://%s/ on its tunnel address\n", netip.AddrPortFrom(b.IP, uint16(o.port)))

		host := "demo." + proxy.domain
		status, body, err := get(startCtx, ln.Addr().String(), host, "/")
		if err != nil {
			return fmt.Errorf("demo request through the proxy: %w", err)
		}
		fmt.Fprintf(out, "request  GET http://%s/ via %s: %s\n%s\n", host, ln.Addr(), status, body)
		if !strings.HasPrefix(status, "200") {
			return fmt.Errorf("demo request: %s", status)
		}
		if !o.serve {
			return nil
		}
	}
	fmt.Fprintln(out, "serving; interrupt to stop")
	select {
	case <-ctx.Done():
	case err := <-served:
		served <- err // for the deferred Close
		return fmt.Errorf("proxy: %w", err)
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}

// startHub starts a hub on addr with the userspace NAT, keeping its registry
// in storePath (memory if empty).
func startHub(ctx context.Context, addr, storePath string, logger *slog.Logger) (*warren.Server, error) {
	keys, err := warren.GenerateKeypair()
	if err != nil {
		return nil, err
	}
	cfg := warren.ServerConfig{
		ListenAddr:     addr,
		PrivateKey:     keys.PrivateKey,
		Subnet:         netip.MustParsePrefix("10.8.0.0/24"),
		ForwardingMode: warren.ForwardSocket,
		// Clients are backends here, not users of an exit node.
		DestinationPolicy: &warren.DestinationPolicy{Default: warren.PolicyBlock},
		Logger:            logger,
	}
	if storePath != "" {
		st, err := warren.NewFileStore(storePath)
		if err != nil {
			return nil, err
		}
		cfg.Store = st
	}
	hub, err := warren.NewServer(cfg)
	if err != nil {
		return nil, err
	}
	if err := hub.Start(ctx); err != nil {
		hub.Close()
		return nil, err
	}
	return hub, nil
}

// Proxy is an http.Handler that forwards a request for <client-id>.<domain>
// to a port of that client's tunnel address, through the hub (Server.Dial).
// Create it with NewProxy; Close releases its idle connections.
type Proxy struct {
	hub    *warren.Server
	domain string // lower case, no leading or trailing dot
	port   string
	tr     *http.Transport
	rp     *httputil.ReverseProxy
}

// dialTimeout bounds a connection attempt to a client: a client that drops
// off between the session check and the dial costs at most this long.
const dialTimeout = 10 * time.Second

// NewProxy returns a Proxy for hub that routes <client-id>.<domain> to port
// port of the client's tunnel address.
func NewProxy(hub *warren.Server, domain string, port int) (*Proxy, error) {
	domain = strings.ToLower(strings.Trim(domain, "."))
	if domain == "" {
		return nil, errors.New("proxy: empty base domain")
	}
	if port <= 0 || port > 65535 {
		return nil, fmt.Errorf("proxy: port %d: not a port number", port)
	}
	p := &Proxy{hub: hub, domain: domain, port: strconv.Itoa(port)}
	p.tr = &http.Transport{
		DialContext:           p.dial,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:      p.rewrite,
		Transport:    p.tr,
		ErrorHandler: p.fail,
	}
	return p, nil
}

// Close closes the proxy's idle connections to clients.
func (p *Proxy) Close() { p.tr.CloseIdleConnections() }

// ServeHTTP answers 404 for a host that names no registered client, 502 for
// a registered client that is not connected, and forwards everything else.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, ok := p.clientID(r.Host)
	if !ok {
		http.Error(w, fmt.Sprintf("no such host %q: this proxy serves <client-id>.%s", r.Host, p.domain), http.StatusNotFound)
		return
	}
	if _, err := p.lookup(r.Context(), id); err != nil {
		p.fail(w, r, err)
		return
	}
	p.rp.ServeHTTP(w, r)
}

// clientID returns the client ID a Host header names: the first label of
// <id>.<domain>, port ignored.
func (p *Proxy) clientID(host string) (string, bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	id, ok := strings.CutSuffix(host, "."+p.domain)
	if !ok || id == "" || strings.Contains(id, ".") {
		return "", false
	}
	return id, true
}

// lookup returns the tunnel address of a registered client that has a live
// session, or an error wrapping warren.ErrUnknownClient or
// warren.ErrNotConnected.
func (p *Proxy) lookup(ctx context.Context, id string) (netip.Addr, error) {
	e, err := p.hub.GetClient(ctx, id)
	if err != nil {
		return netip.Addr{}, err
	}
	for _, c := range p.hub.ListClients() {
		if c.ClientID == id {
			return e.AssignedIP, nil
		}
	}
	why := "has no session with the hub"
	if !e.Enabled {
		why = "is disabled"
	}
	return netip.Addr{}, fmt.Errorf("client %q %s: %w", id, why, warren.ErrNotConnected)
}

// rewrite points the outbound request at <id>.<domain>:<port>, which dial
// maps to the client's tunnel address. The service sees the Host the user
// asked for.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	id, _ := p.clientID(pr.In.Host) // ServeHTTP has checked it
	pr.SetURL(&url.URL{Scheme: "http", Host: net.JoinHostPort(id+"."+p.domain, p.port)})
	pr.Out.Host = pr.In.Host
	pr.SetXForwarded()
}

// dial is the Transport's DialContext: addr is "<id>.<domain>:<port>"; it
// connects, through the hub, to that client's tunnel address.
func (p *Proxy) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	id, ok := p.clientID(host)
	if !ok {
		return nil, fmt.Errorf("%w: %q is not <client-id>.%s", warren.ErrUnknownClient, host, p.domain)
	}
	ip, err := p.lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	c, err := p.hub.Dial(ctx, network, net.JoinHostPort(ip.String(), port))
	if err != nil {
		return nil, fmt.Errorf("client %q at %s: %w", id, ip, err)
	}
	return c, nil
}

// fail is the ReverseProxy's ErrorHandler, and answers ServeHTTP's own
// lookup failures.
func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, warren.ErrUnknownClient):
		http.Error(w, fmt.Sprintf("no such client: %v", err), http.StatusNotFound)
	case errors.Is(err, warren.ErrNotConnected):
		http.Error(w, fmt.Sprintf("bad gateway: the VPN client is not connected: %v", err), http.StatusBadGateway)
	case errors.Is(err, syscall.ECONNREFUSED):
		http.Error(w, fmt.Sprintf("bad gateway: the VPN client is connected but nothing listens on port %s of its tunnel address: %v", p.port, err), http.StatusBadGateway)
	case r.Context().Err() != nil:
		// The user went away; nobody reads the answer.
		w.WriteHeader(http.StatusBadGateway)
	default:
		http.Error(w, fmt.Sprintf("bad gateway: %v", err), http.StatusBadGateway)
	}
}

// backend is a VPN client, connected in netstack mode, that serves HTTP on
// its tunnel address.
type backend struct {
	ID     string
	IP     netip.Addr
	Client *warren.Client
	srv    *http.Server
	served chan struct{}
}

// startBackend registers client id on hub (or gives it a new key if it is
// registered already), connects it and serves h on port of its tunnel address.
func startBackend(ctx context.Context, hub *warren.Server, id string, port int, h http.Handler) (*backend, error) {
	bundle, err := hub.CreateClient(ctx, warren.ClientSpec{ClientID: id})
	if errors.Is(err, warren.ErrClientExists) {
		// Registered by an earlier run (-store): its old secret key is gone.
		bundle, err = hub.RotateClientKey(ctx, id)
	}
	if err != nil {
		return nil, err
	}
	cfg := bundle.Config
	cfg.ForwardingMode = warren.ForwardNetstack
	c, err := warren.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	info, err := c.Connect(ctx)
	if err != nil {
		c.Close()
		return nil, err
	}
	ln, err := c.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		c.Close()
		return nil, err
	}
	b := &backend{
		ID:     id,
		IP:     info.AssignedIP.Addr(),
		Client: c,
		srv:    &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second},
		served: make(chan struct{}),
	}
	go func() {
		defer close(b.served)
		b.srv.Serve(ln)
	}()
	return b, nil
}

// Close stops the service and closes the client.
func (b *backend) Close() error {
	b.srv.Close()
	<-b.served
	return b.Client.Close()
}

// pageHandler serves msg and says who asked and for which host.
func pageHandler(msg string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s\nHost: %s, path %s, from %s (X-Forwarded-For: %s)\n",
			msg, r.Host, r.URL.Path, r.RemoteAddr, r.Header.Get("X-Forwarded-For"))
	})
}

// get fetches path from the proxy at proxyAddr with the Host header host and
// returns the status line and body.
func get(ctx context.Context, proxyAddr, host, path string) (status, body string, err error) {
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+proxyAddr+path, nil)
	if err != nil {
		return "", "", err
	}
	req.Host = host
	resp, err := (&http.Client{Transport: tr, Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.Status, string(b), err
}
