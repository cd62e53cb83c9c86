// Command quickstart runs a Warren hub and three clients in one process on
// loopback, sends real traffic through the tunnel and prints what happened.
//
//	go run ./examples/quickstart
//
// The hub listens for WebSocket/TLS and QUIC on 127.0.0.1 (TCP and UDP, on a
// port chosen by the OS) with a self-signed certificate that the clients pin,
// and for WireGuard on a UDP port chosen by the OS. Its forwarding engine is the userspace NAT
// (gVisor netstack, no root); the clients run netstack too, so everything
// below is ordinary net.Conn code. alice connects over QUIC, bob over
// WebSocket, carol over WireGuard (wireguard-go in userspace), and all three go through
// the same packet pipeline:
//
//  1. alice and carol fetch a page from an HTTP server this program runs on
//     127.0.0.1, through the tunnel and the hub's NAT;
//  2. the hub fetches a page from an HTTP server alice serves on her tunnel
//     address (Server.Dial);
//  3. alice and bob, then carol and bob, exchange UDP datagrams through the
//     hub (ListenPacket).
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"time"

	"github.com/warrenvpn/warren"
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

	// A web server on the host, which clients reach through the hub's NAT.
	web, err := serveHTTP("127.0.0.1:0", "hello from the host's 127.0.0.1")
	if err != nil {
		return err
	}
	defer web.Close()

	keys, err := warren.GenerateKeypair()
	if err != nil {
		return err
	}
	// A second keypair makes the hub run WireGuard next to WebSocket.
	wgKeys, err := warren.GenerateWGKeypair()
	if err != nil {
		return err
	}
	start := time.Now()
	hub, err := warren.NewServer(warren.ServerConfig{
		ListenAddr:     "127.0.0.1:0",
		PrivateKey:     keys.PrivateKey,
		WGPrivateKey:   wgKeys.PrivateKey,
		WGListenPort:   0, // any free UDP port; hub.WGAddr says which
		Subnet:         netip.MustParsePrefix("10.8.0.0/24"),
		ForwardingMode: warren.ForwardSocket,
		// Loopback is refused by default: a client must not reach the hub's
		// own services by accident. This example's web server lives there.
		DestinationPolicy: &warren.DestinationPolicy{Default: warren.PolicyAllow, AllowList: []string{"127.0.0.1"}},
		Logger:            logger,
	})
	if err != nil {
		return err
	}
	defer hub.Close()
	if err := hub.Start(ctx); err != nil {
		return err
	}
	fmt.Printf("hub      wss://%s, quic udp %s and wireguard udp %s, tunnel 10.8.0.0/24, hub address %s, userspace NAT (%v)\n", hub.Addr(), hub.QUICAddr(), hub.WGAddr(), hub.HubIP(), since(start))

	alice, aliceIP, err := connect(ctx, hub, "alice", warren.ClientQUIC, logger)
	if err != nil {
		return err
	}
	defer alice.Close()
	bob, bobIP, err := connect(ctx, hub, "bob", warren.ClientWebSocket, logger)
	if err != nil {
		return err
	}
	defer bob.Close()
	carol, carolIP, err := connect(ctx, hub, "carol", warren.ClientWireGuard, logger)
	if err != nil {
		return err
	}
	defer carol.Close()

	// 1. alice -> hub NAT -> 127.0.0.1 web server.
	t := time.Now()
	url := "http://" + web.Addr().String() + "/"
	body, err := get(ctx, alice.Dial, url)
	if err != nil {
		return fmt.Errorf("alice fetching %s: %w", url, err)
	}
	fmt.Printf("http     alice %s GET %s over quic through the hub's NAT: %q (%v)\n", aliceIP, url, body, since(t))

	// 1b. carol -> hub NAT -> the same web server, over WireGuard.
	t = time.Now()
	body, err = get(ctx, carol.Dial, url)
	if err != nil {
		return fmt.Errorf("carol fetching %s: %w", url, err)
	}
	fmt.Printf("http     carol %s GET %s over wireguard through the hub's NAT: %q (%v)\n", carolIP, url, body, since(t))

	// 2. hub -> alice's tunnel address.
	ln, err := alice.Listen("tcp", ":8080")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from alice's tunnel address, you are %s", r.RemoteAddr)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	t = time.Now()
	url = fmt.Sprintf("http://%s:8080/", aliceIP)
	body, err = get(ctx, hub.Dial, url)
	if err != nil {
		return fmt.Errorf("hub fetching %s: %w", url, err)
	}
	fmt.Printf("http     hub GET %s with Server.Dial over quic: %q (%v)\n", url, body, since(t))

	// 3. alice <-> bob over UDP through the hub.
	pc, err := bob.ListenPacket("udp", ":5000")
	if err != nil {
		return err
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("bob got: "), buf[:n]...), from)
		}
	}()
	bobAddr := netip.AddrPortFrom(bobIP, 5000)
	for i := 1; i <= 3; i++ {
		if err := echoUDP(ctx, alice, "alice", aliceIP, "quic", bobAddr, i); err != nil {
			return err
		}
	}
	// 3b. carol (WireGuard) <-> bob (WebSocket): one pipeline joins them.
	if err := echoUDP(ctx, carol, "carol", carolIP, "wireguard", bobAddr, 1); err != nil {
		return err
	}

	st := hub.Statistics()
	fmt.Printf("hub      packets in %d, out %d; bytes in %d, out %d; handshakes %d\n", st.PacketsIn, st.PacketsOut, st.BytesIn, st.BytesOut, st.Handshakes)
	for _, c := range hub.ListClients() {
		fmt.Printf("session  %-5s %s via %s from %s: %d packets in, %d out\n", c.ClientID, c.AssignedIP, c.Transport, c.RemoteAddr, c.PacketsIn, c.PacketsOut)
	}
	fmt.Printf("done in %v\n", since(start))
	return nil
}

// connect registers a client on the hub and connects it over the given
// transport. The bundle's config serves both: it holds the WebSocket URL and
// pin as well as the WireGuard keys, address and endpoint.
func connect(ctx context.Context, hub *warren.Server, id string, transport warren.ClientTransport, logger *slog.Logger) (*warren.Client, netip.Addr, error) {
	t := time.Now()
	bundle, err := hub.CreateClient(ctx, warren.ClientSpec{ClientID: id})
	if err != nil {
		return nil, netip.Addr{}, err
	}
	cfg := bundle.Config
	cfg.Logger = logger
	cfg.Transport = transport
	if transport == warren.ClientWireGuard {
		// The bundle's WireGuard peer routes only the tunnel subnet (split
		// tunnel). Add a default route after it so the host's 127.0.0.1 web
		// server is reached through the hub's NAT, as over WebSocket.
		cfg.WGAllowedIPs = append(cfg.WGAllowedIPs, netip.MustParsePrefix("0.0.0.0/0"))
	}
	c, err := warren.NewClient(cfg)
	if err != nil {
		return nil, netip.Addr{}, err
	}
	info, err := c.Connect(ctx)
	if err != nil {
		c.Close()
		return nil, netip.Addr{}, err
	}
	fmt.Printf("client   %-5s connected over %s, assigned %s (%v)\n", id, info.Transport, info.AssignedIP, since(t))
	return c, info.AssignedIP.Addr(), nil
}

// echoUDP sends one datagram from a client to the UDP echo at to and waits
// for the answer.
func echoUDP(ctx context.Context, c *warren.Client, name string, ip netip.Addr, transport string, to netip.AddrPort, i int) error {
	t := time.Now()
	conn, err := c.Dial(ctx, "udp", to.String())
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(conn, "datagram %d from %s", i, name); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		return fmt.Errorf("%s waiting for bob: %w", name, err)
	}
	fmt.Printf("udp      %s %s over %s -> bob %s over websocket and back: %q (%v)\n", name, ip, transport, to, buf[:n], since(t))
	return nil
}

func serveHTTP(addr, msg string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, msg)
	}))
	return ln, nil
}

func get(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), url string) (string, error) {
	tr := &http.Transport{DialContext: dial}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func since(t time.Time) time.Duration { return time.Since(t).Round(10 * time.Microsecond) }
