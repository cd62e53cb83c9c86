package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/warrenvpn/warren"
	"github.com/warrenvpn/warren/admin"
	"github.com/warrenvpn/warren/etcdstore"
)

// newLogger returns a slog logger on w in format text or json.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("--log-level %q: must be debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, usagef("--log-format %q: must be text or json", format)
	}
}

func (e *env) check(args []string) error {
	fs := e.newFlags("check", "check --config FILE [--mode hub|client]")
	path := fs.String("config", "", "the config file to check (required)")
	mode := fs.String("mode", "hub", "what the file configures: hub or client")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if *path == "" || len(pos) > 0 {
		return usagef("check needs --config FILE and no arguments")
	}
	switch *mode {
	case "hub":
		cfg, err := warren.LoadServerConfig(*path)
		if err != nil {
			return err
		}
		if _, err := warren.NewServer(cfg); err != nil {
			return withFile(*path, err)
		}
	case "client":
		cfg, err := warren.LoadClientConfig(*path)
		if err != nil {
			return err
		}
		if _, err := warren.NewClient(cfg); err != nil {
			return withFile(*path, err)
		}
	default:
		return usagef("--mode %q: must be hub or client", *mode)
	}
	fmt.Fprintf(e.stdout, "%s: ok\n", *path)
	return nil
}

// withFile names the config file in a validation error that does not yet.
func withFile(path string, err error) error {
	var ce *warren.ConfigError
	if errors.As(err, &ce) && ce.File == "" {
		c := *ce
		c.File = path
		return &c
	}
	return err
}

func (e *env) hub(args []string) error {
	fs := e.newFlags("hub", "hub --config hub.json [--registry FILE | --etcd-endpoints URLS] [flags]")
	path := fs.String("config", "", "the hub's config: a ServerConfig as JSON (required)")
	registry := fs.String("registry", "", "the registry file (created if missing); empty: in memory, lost at exit")
	etcdEndpoints := fs.String("etcd-endpoints", "", "keep the registry in etcd, shared with the other hubs of a fleet: its client URLs, comma-separated, e.g. http://10.0.0.5:2379 (instead of --registry)")
	etcdPrefix := fs.String("etcd-prefix", etcdstore.DefaultPrefix, "with --etcd-endpoints: the registry's key prefix, the same on every hub of the fleet")
	hubID := fs.String("hub-id", "", "with --etcd-endpoints: this hub's name in the fleet, distinct on each hub; empty: the host name and a random suffix")
	sock := fs.String("admin-socket", defaultAdminSocket(), `the admin API's Unix socket (mode 0600); "" for none`)
	httpAddr := fs.String("admin-http", "", "serve the status page on this TCP address, e.g. 127.0.0.1:8080 (needs a token)")
	tokenFile := fs.String("admin-token-file", "", "file holding the status page's token; empty: a random token, logged at start")
	certFile := fs.String("self-signed-cert", "", "without tlsCertFile: keep the hub's self-signed certificate and key in this PEM file (made if missing), so the pin in client bundles survives restarts")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if *path == "" || len(pos) > 0 {
		return usagef("hub needs --config FILE and no arguments")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case *registry != "" && *etcdEndpoints != "":
		return usagef("--registry and --etcd-endpoints: the registry is either a file or in etcd, not both")
	case *etcdEndpoints == "" && (set["etcd-prefix"] || set["hub-id"]):
		return usagef("--etcd-prefix and --hub-id need --etcd-endpoints")
	}
	log, err := newLogger(e.stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	cfg, err := warren.LoadServerConfig(*path)
	if err != nil {
		return err
	}
	cfg.Logger = log
	switch {
	case *etcdEndpoints != "":
		var eps []string
		for _, ep := range strings.Split(*etcdEndpoints, ",") {
			if ep = strings.TrimSpace(ep); ep != "" {
				eps = append(eps, ep)
			}
		}
		if len(eps) == 0 {
			return usagef("--etcd-endpoints %q: names no endpoint", *etcdEndpoints)
		}
		store, err := etcdstore.New(etcdstore.Config{Endpoints: eps, Prefix: *etcdPrefix, HubID: *hubID})
		if err != nil {
			return err
		}
		defer store.Close()
		cfg.Store = store
		log.Info("registry in etcd", "endpoints", strings.Join(eps, ","), "prefix", store.Prefix())
	case *registry != "":
		store, err := warren.NewFileStore(*registry)
		if err != nil {
			return err
		}
		cfg.Store = store
	default:
		log.Warn("no --registry: clients created now are lost when the hub stops")
	}
	switch {
	case *certFile != "" && (cfg.TLSCertFile != "" || cfg.TLSKeyFile != ""):
		log.Info("the config names tlsCertFile: --self-signed-cert is not used")
	case *certFile != "":
		tc, made, err := selfSignedCert(*certFile, endpointHost(cfg.PublicEndpoint))
		if err != nil {
			return err
		}
		if made {
			log.Info("made a self-signed certificate", "file", *certFile)
		}
		cfg.TLSConfig = tc
	}
	token := ""
	if *httpAddr != "" {
		if token, err = readToken(*tokenFile); err != nil {
			return err
		}
	}
	srv, err := warren.NewServer(cfg)
	if err != nil {
		return withFile(*path, err)
	}
	defer srv.Close()

	// Signals first, so a SIGTERM during start still stops us cleanly.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	err = srv.Start(ctx)
	cancel()
	if err != nil {
		return err
	}
	var servers []*http.Server
	serveErr := make(chan error, 2)
	serve := func(ln net.Listener, h http.Handler) {
		hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		servers = append(servers, hs)
		go func() {
			if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- err
			}
		}()
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, hs := range servers {
			hs.Shutdown(ctx)
		}
	}()
	if *sock != "" {
		if err := os.MkdirAll(filepath.Dir(*sock), 0o700); err != nil {
			return fmt.Errorf("admin socket: %w", err)
		}
		ln, err := admin.ListenUnix(*sock)
		if err != nil {
			return err
		}
		serve(ln, admin.Handler(srv, log))
		log.Info("admin API listening", "socket", *sock)
	}
	if *httpAddr != "" {
		ln, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			return fmt.Errorf("--admin-http: %w", err)
		}
		serve(ln, admin.RequireToken(token, admin.StatusPage(srv)))
		if *tokenFile == "" {
			log.Info("status page", "url", "http://"+ln.Addr().String()+"/?token="+token)
		} else {
			log.Info("status page", "url", "http://"+ln.Addr().String()+"/", "tokenFile", *tokenFile)
		}
	}
	attrs := []any{"websocket", addrString(srv.Addr()), "quic", addrString(srv.QUICAddr()), "wireguard", addrString(srv.WGAddr()),
		"hubIp", srv.HubIP(), "publicKey", cfg.PrivateKey.PublicKey()}
	if h := srv.CertHash(); h != "" {
		attrs = append(attrs, "certHash", h)
	}
	log.Info("hub running", attrs...)

	for {
		select {
		case err := <-serveErr:
			return fmt.Errorf("admin server: %w", err)
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				log.Warn("SIGHUP: reloading the config is not supported yet; restart the hub to apply changes")
				continue
			}
			log.Info("stopping", "signal", sig.String())
			if err := srv.Close(); err != nil {
				return err
			}
			log.Info("stopped")
			return nil
		}
	}
}

// addrString is a listener's address, or "" when it does not run.
func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// readToken reads the status page's token from path, or makes one.
func readToken(path string) (string, error) {
	if path == "" {
		b := make([]byte, 16)
		rand.Read(b)
		return hex.EncodeToString(b), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--admin-token-file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if len(t) < 16 {
		return "", fmt.Errorf("--admin-token-file %s: the token must be at least 16 characters", path)
	}
	return t, nil
}
