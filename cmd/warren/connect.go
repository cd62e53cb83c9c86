package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/warrenvpn/warren"
	"github.com/warrenvpn/warren/telemetry"
)

// permanent are the ends after which a Client does not reconnect.
var permanent = []error{
	warren.ErrClientDisabled, warren.ErrKeyRotated, warren.ErrClientExpired,
	warren.ErrClientRemoved, warren.ErrClientRefused, warren.ErrSessionReplaced,
}

func isPermanent(err error) bool {
	for _, p := range permanent {
		if errors.Is(err, p) {
			return true
		}
	}
	return false
}

func (e *env) connect(args []string) error {
	fs := e.newFlags("connect", "connect --config client.json [flags]")
	path := fs.String("config", "", "the client's config: a ClientConfig as JSON, as warren client create writes it (required)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	var fwdFlags strList
	fs.Var(&fwdFlags, "forward", "LISTEN=TARGET: carry TCP connections to the local address LISTEN through the tunnel to TARGET (repeatable)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if *path == "" || len(pos) > 0 {
		return usagef("connect needs --config FILE and no arguments")
	}
	var fwds []forward
	for _, s := range fwdFlags {
		f, err := parseForward(s)
		if err != nil {
			return err
		}
		fwds = append(fwds, f)
	}
	log, err := newLogger(e.stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	cfg, err := warren.LoadClientConfig(*path)
	if err != nil {
		return err
	}
	if cfg.PrivateKey.IsZero() {
		return fmt.Errorf("%s: privateKey is empty: an exported config has no secrets; use the file warren client create (or rotate) wrote", *path)
	}
	if cfg.ForwardingMode == warren.ForwardTUN && len(fwds) > 0 {
		return usagef("--forward needs forwardingMode netstack: in forwardingMode tun (%s) the host's own sockets reach the tunnel, so connect to the target directly", *path)
	}
	cfg.Logger = log
	cl, err := warren.NewClient(cfg)
	if err != nil {
		return withFile(*path, err)
	}
	defer cl.Close()
	events, unsubscribe := cl.Subscribe()
	defer unsubscribe()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()
	info, err := cl.Connect(ctx)
	cancel()
	if err != nil {
		return err
	}
	e.printConnected("connected", info, cl)
	fw := newForwarder(cl, log)
	defer fw.close()
	for _, f := range fwds {
		addr, err := fw.add(f)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "forwarding %s to %s\n", addr, f.target)
	}
	for {
		select {
		case sig := <-sigs:
			log.Info("disconnecting", "signal", sig.String())
			return nil
		case ev := <-events:
			switch ev := ev.(type) {
			case warren.Reconnected:
				e.printConnected("reconnected", ev.Info, cl)
			case warren.LinkHealthChanged:
				fmt.Fprintf(e.stdout, "link health changed from %s to %s: %s\n", ev.From, ev.To, formatQuality(cl.ConnectionQuality()))
			case warren.ClientDisconnected:
				if isPermanent(ev.Err) {
					return fmt.Errorf("the hub ended the session for good: %w", ev.Err)
				}
			case warren.Error:
				if isPermanent(ev.Err) {
					return fmt.Errorf("the hub refused to reconnect: %w", ev.Err)
				}
			}
		}
	}
}

func (e *env) printConnected(what string, info warren.ConnectInfo, cl *warren.Client) {
	fmt.Fprintf(e.stdout, "%s as %s over %s (mtu %d, gateway %s)", what, info.AssignedIP, info.Transport, info.MTU, info.Gateway)
	if rtt := cl.RTT(); rtt > 0 {
		fmt.Fprintf(e.stdout, ", rtt %s", rtt.Round(time.Microsecond))
	}
	fmt.Fprintln(e.stdout)
	fmt.Fprintf(e.stdout, "link quality: %s\n", formatQuality(cl.ConnectionQuality()))
}

// formatQuality says a link's health, smoothed RTT and keepalive loss, with
// "unknown" for what is not measured yet (or, over WireGuard, at all).
func formatQuality(q telemetry.Quality) string {
	rtt, loss := "unknown", "unknown"
	if q.RTT.Samples > 0 {
		rtt = q.RTT.Smoothed.Round(time.Microsecond).String()
	}
	if q.Loss.Settled > 0 {
		loss = fmt.Sprintf("%.1f%% of %d keepalives", 100*q.Loss.Ratio, q.Loss.Settled)
	}
	return fmt.Sprintf("health %s, rtt %s, loss %s", q.Health, rtt, loss)
}
