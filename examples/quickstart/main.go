// Command quickstart runs a Warren hub and two clients in one process on
// loopback, sends real traffic through the tunnel and prints what happened.
//
//	go run ./examples/quickstart
//
// The hub listens on 127.0.0.1 with ports chosen by the OS and a self-signed
// certificate that the clients pin. Alice pings the hub's tunnel address (the
// testing engine answers the echo), then alice and bob exchange UDP datagrams
// through the hub.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"time"

	"github.com/warrenvpn/warren"
	fwdtesting "github.com/warrenvpn/warren/forward/testing"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	keys, err := warren.GenerateKeypair()
	if err != nil {
		return err
	}
	start := time.Now()
	hub, err := warren.NewServer(warren.ServerConfig{
		ListenAddr: "127.0.0.1:0",
		PrivateKey: keys.PrivateKey,
		Subnet:     netip.MustParsePrefix("10.8.0.0/24"),
		Forwarder:  fwdtesting.New(fwdtesting.Options{EchoICMP: true}),
		Logger:     logger,
	})
	if err != nil {
		return err
	}
	defer hub.Close()
	if err := hub.Start(ctx); err != nil {
		return err
	}
	fmt.Printf("hub       listening on wss://%s, tunnel %s, hub address %s (%v)\n", hub.Addr(), "10.8.0.0/24", hub.HubIP(), since(start))

	alice, aliceNet, err := connect(ctx, hub, "alice", logger)
	if err != nil {
		return err
	}
	defer alice.Close()
	bob, bobNet, err := connect(ctx, hub, "bob", logger)
	if err != nil {
		return err
	}
	defer bob.Close()

	aliceIP := hub.ListClients()[0].AssignedIP
	bobIP := hub.ListClients()[1].AssignedIP

	// 1. alice pings the hub: an ICMP echo request through the tunnel, answered
	// by the hub's testing engine.
	t := time.Now()
	if err := aliceNet.Inject(fwdtesting.ICMPEcho(aliceIP, hub.HubIP(), 1, 1, []byte("warren"))); err != nil {
		return err
	}
	if _, err := aliceNet.Next(ctx); err != nil {
		return fmt.Errorf("alice: no echo reply: %w", err)
	}
	fmt.Printf("ping      alice %s -> hub %s: echo reply in %v\n", aliceIP, hub.HubIP(), since(t))

	// 2. alice and bob exchange UDP datagrams through the hub.
	for i := 1; i <= 3; i++ {
		t = time.Now()
		msg := fmt.Sprintf("datagram %d from alice", i)
		if err := aliceNet.Inject(fwdtesting.UDPPacket(netip.AddrPortFrom(aliceIP, 4000), netip.AddrPortFrom(bobIP, 5000), []byte(msg))); err != nil {
			return err
		}
		if _, err := bobNet.Next(ctx); err != nil {
			return fmt.Errorf("bob: no datagram: %w", err)
		}
		reply := fmt.Sprintf("datagram %d from bob", i)
		if err := bobNet.Inject(fwdtesting.UDPPacket(netip.AddrPortFrom(bobIP, 5000), netip.AddrPortFrom(aliceIP, 4000), []byte(reply))); err != nil {
			return err
		}
		if _, err := aliceNet.Next(ctx); err != nil {
			return fmt.Errorf("alice: no reply: %w", err)
		}
		fmt.Printf("udp       alice %s <-> bob %s through the hub: round trip %d in %v\n", aliceIP, bobIP, i, since(t))
	}

	st := hub.Statistics()
	fmt.Printf("hub stats packets in %d, out %d, bytes in %d, handshakes %d\n", st.PacketsIn, st.PacketsOut, st.BytesIn, st.Handshakes)
	for _, c := range hub.ListClients() {
		fmt.Printf("session   %-5s %s via %s from %s: %d packets in, %d out\n", c.ClientID, c.AssignedIP, c.Transport, c.RemoteAddr, c.PacketsIn, c.PacketsOut)
	}
	fmt.Printf("done in %v\n", since(start))
	return nil
}

// connect registers a client on the hub and connects it with its own testing
// engine, which stands in for the client's network stack.
func connect(ctx context.Context, hub *warren.Server, id string, logger *slog.Logger) (*warren.Client, *fwdtesting.Engine, error) {
	t := time.Now()
	bundle, err := hub.CreateClient(ctx, warren.ClientSpec{ClientID: id})
	if err != nil {
		return nil, nil, err
	}
	engine := fwdtesting.New(fwdtesting.Options{})
	cfg := bundle.Config
	cfg.Forwarder = engine
	cfg.Logger = logger
	c, err := warren.NewClient(cfg)
	if err != nil {
		return nil, nil, err
	}
	info, err := c.Connect(ctx)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	fmt.Printf("client    %-5s connected over %s, assigned %s (%v)\n", id, info.Transport, info.AssignedIP, since(t))
	return c, engine, nil
}

func since(t time.Time) time.Duration { return time.Since(t).Round(10 * time.Microsecond) }
