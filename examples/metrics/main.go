// Command metrics runs a Warren hub and one client in one process on
// loopback and serves the hub's telemetry to Prometheus on 127.0.0.1:
//
//	go run ./examples/metrics              # serves http://127.0.0.1:9464/metrics until interrupted
//	go run ./examples/metrics -addr 127.0.0.1:0
//
// Warren never opens a metrics port of its own (DESIGN §6): the program
// registers a telemetry/promexport Collector with its own registry and
// serves it where it wants. The root package does not import Prometheus;
// Server.Telemetry returns the neutral types of package telemetry, and the
// few lines of source below adapt them to promexport.Source.
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
	"net/netip"
	"os"
	"os/signal"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/warrenvpn/warren"
	"github.com/warrenvpn/warren/telemetry/promexport"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9464", "address to serve /metrics on")
	perClient := flag.Bool("per-client", true, "export per-client series (client label)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	err := run(ctx, *addr, *perClient, func(url string) {
		fmt.Printf("serving %s (Ctrl-C stops)\n", url)
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "metrics:", err)
		os.Exit(1)
	}
}

// source adapts a Server to promexport.Source.
func source(hub *warren.Server) promexport.Source {
	return promexport.SourceFunc(func() promexport.Snapshot {
		t := hub.Telemetry()
		snap := promexport.Snapshot{Server: t.Server, Clients: make([]promexport.Client, 0, len(t.Clients))}
		for _, c := range t.Clients {
			snap.Clients = append(snap.Clients, promexport.Client{ID: c.ID, Statistics: c.Statistics, Quality: c.Quality})
		}
		return snap
	})
}

// run starts a hub and a client, sends a little traffic, and serves
// /metrics on addr until ctx ends; ready gets the metrics URL.
func run(ctx context.Context, addr string, perClient bool, ready func(url string)) error {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	keys, err := warren.GenerateKeypair()
	if err != nil {
		return err
	}
	hub, err := warren.NewServer(warren.ServerConfig{
		ListenAddr:     "127.0.0.1:0",
		PrivateKey:     keys.PrivateKey,
		Subnet:         netip.MustParsePrefix("10.8.0.0/24"),
		ForwardingMode: warren.ForwardSocket,
		Logger:         logger,
	})
	if err != nil {
		return err
	}
	defer hub.Close()
	if err := hub.Start(ctx); err != nil {
		return err
	}
	bundle, err := hub.CreateClient(ctx, warren.ClientSpec{ClientID: "alice"})
	if err != nil {
		return err
	}
	cfg := bundle.Config
	cfg.Logger = logger
	client, err := warren.NewClient(cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := client.Connect(cctx); err != nil {
		return err
	}
	// Some traffic for the counters: a TCP connection to the hub's own
	// tunnel address, which nothing listens on (refused, but carried).
	if c, err := client.Dial(cctx, "tcp", netip.AddrPortFrom(hub.HubIP(), 9).String()); err == nil {
		c.Close()
	}

	reg := prometheus.NewRegistry()
	if err := reg.Register(promexport.New(source(hub), promexport.Options{PerClient: perClient})); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	ready("http://" + ln.Addr().String() + "/metrics")
	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	err = srv.Shutdown(sctx)
	if serr := <-done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
