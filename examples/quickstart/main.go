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
	if _, err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// results is what run saw come back through the tunnel.
type results struct {
	// Transports maps each client to the transport it connected over, as
	// the client's Connect reported it.
	Transports map[string]string
	// HubTransports maps each client to its session's transport as the hub
	// lists it.
	HubTransports map[string]string
	// Pages are the HTTP pages fetched through the tunnel, in order.
	Pages []page
	// Echoes are the UDP round trips to bob, in order.
	Echoes []echo
}

// page is one HTTP GET through the tunnel.
type page struct {
	Who, URL, Body string
}

// echo is one UDP datagram sent to bob and his answer.
type echo struct {
	Who, Sent, Got string
}

// run runs the hub and the clients, prints what happens to out and returns
// what came back.
func run(out io.Writer) (*results, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	res := &results{Transports: map[string]string{}, HubTransports: map[string]string{}}

	// A web server on the host, which clients reach through the hub's NAT.
	web, webAddr, err := serveHTTP("127.0.0.1:0", "hello from the host's 127.0.0.1")
	if err != nil {
		return nil, err
	}
	defer web.Close()

	keys, err := warren.GenerateKeypair()
	if err != nil {
		return nil, err
	}
	// A second keypair makes the hub run WireGuard next to WebSocket.
	wgKeys, err := warren.GenerateWGKeypair()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	hub, err := warren.NewServer(warren.ServerConfig{
		ListenAddr:     "127.0.0.1:0",
		PrivateKey:     keys.PrivateKey,
		WGPrivateKey:   wgKeys.PrivateKey,
		WGListenPort:   0, // any free UDP port; hub.WGAddr says which
		Subnet:         netip.MustParsePrefix("10.8.0.0/24"),
		ForwardingMode: warren.ForwardSocket,
		// alice and carol reach the host's web server, outside the tunnel
		// subnet: that takes the hub's NAT.
		EnableNAT: true,
		// Loopback is refused by default: a client must not reach the hub's
		// own services by accident. This example's web server lives there.
		DestinationPolicy: &warren.DestinationPolicy{Default: warren.PolicyAllow, AllowList: []string{"127.0.0.1"}},
		Logger:            logger,
	})
	if err != nil {
		return nil, err
	}
	defer hub.Close()
	if err := hub.Start(ctx); err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "hub      wss://%s, quic udp %s and wireguard udp %s, tunnel 10.8.0.0/24, hub address %s, userspace NAT (%v)\n", hub.Addr(), hub.QUICAddr(), hub.WGAddr(), hub.HubIP(), since(start))

	clients := map[string]*warren.Client{}
	ips := map[string]netip.Addr{}
	for _, c := range []struct {
		name      string
		transport warren.ClientTransport
	}{
		{"alice", warren.ClientQUIC},
		{"bob", warren.ClientWebSocket},
		{"carol", warren.ClientWireGuard},
	} {
		t := time.Now()
		client, info, err := connect(ctx, hub, c.name, c.transport, logger)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.name, err)
		}
		defer client.Close()
		clients[c.name], ips[c.name] = client, info.AssignedIP.Addr()
		res.Transports[c.name] = info.Transport
		fmt.Fprintf(out, "client   %-5s connected over %s, assigned %s (%v)\n", c.name, info.Transport, info.AssignedIP, since(t))
	}
	alice, bob, carol := clients["alice"], clients["bob"], clients["carol"]

	// fetch GETs url with dial and records the page.
	fetch := func(who string, dial func(context.Context, string, string) (net.Conn, error), url string) error {
		t := time.Now()
		body, err := get(ctx, dial, url)
		if err != nil {
			return fmt.Errorf("%s fetching %s: %w", who, url, err)
		}
		res.Pages = append(res.Pages, page{Who: who, URL: url, Body: body})
		fmt.Fprintf(out, "http     %s GET %s: %q (%v)\n", who, url, body, since(t))
		return nil
	}

	// 1. alice (QUIC) and carol (WireGuard) -> hub NAT -> 127.0.0.1 web server.
	url := "http://" + webAddr.String() + "/"
	if err := fetch("alice", alice.Dial, url); err != nil {
		return nil, err
	}
	if err := fetch("carol", carol.Dial, url); err != nil {
		return nil, err
	}

	// 2. hub -> alice's tunnel address.
	ln, err := alice.Listen("tcp", ":8080")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from alice's tunnel address, you are %s", r.RemoteAddr)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	if err := fetch("hub", hub.Dial, fmt.Sprintf("http://%s:8080/", ips["alice"])); err != nil {
		return nil, err
	}

	// 3. alice <-> bob over UDP through the hub.
	pc, err := bob.ListenPacket("udp", ":5000")
	if err != nil {
		return nil, err
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
	bobAddr := netip.AddrPortFrom(ips["bob"], 5000)
	for i := 1; i <= 3; i++ {
		e, err := echoUDP(ctx, alice, "alice", bobAddr, i)
		if err != nil {
			return nil, err
		}
		res.Echoes = append(res.Echoes, e)
		fmt.Fprintf(out, "udp      alice %s -> bob %s and back: %q\n", ips["alice"], bobAddr, e.Got)
	}
	// 3b. carol (WireGuard) <-> bob (WebSocket): one pipeline joins them.
	e, err := echoUDP(ctx, carol, "carol", bobAddr, 1)
	if err != nil {
		return nil, err
	}
	res.Echoes = append(res.Echoes, e)
	fmt.Fprintf(out, "udp      carol %s -> bob %s and back: %q\n", ips["carol"], bobAddr, e.Got)

	st := hub.Statistics()
	fmt.Fprintf(out, "hub      packets in %d, out %d; bytes in %d, out %d; handshakes %d\n", st.PacketsIn, st.PacketsOut, st.BytesIn, st.BytesOut, st.Handshakes)
	for _, c := range hub.ListClients() {
		res.HubTransports[c.ClientID] = c.Transport
		fmt.Fprintf(out, "session  %-5s %s via %s from %s: %d packets in, %d out\n", c.ClientID, c.AssignedIP, c.Transport, c.RemoteAddr, c.PacketsIn, c.PacketsOut)
	}
	fmt.Fprintf(out, "done in %v\n", since(start))
	return res, nil
}

// connect registers a client on the hub and connects it over the given
// transport. The bundle's config serves every transport: it holds the
// WebSocket URL, QUIC address and pin as well as the WireGuard keys, address
// and endpoint.
func connect(ctx context.Context, hub *warren.Server, id string, transport warren.ClientTransport, logger *slog.Logger) (*warren.Client, warren.ConnectInfo, error) {
	bundle, err := hub.CreateClient(ctx, warren.ClientSpec{ClientID: id})
	if err != nil {
		return nil, warren.ConnectInfo{}, err
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
		return nil, warren.ConnectInfo{}, err
	}
	info, err := c.Connect(ctx)
	if err != nil {
		c.Close()
		return nil, warren.ConnectInfo{}, err
	}
	return c, info, nil
}

// echoUDP sends one datagram from a client to the UDP echo at to and waits
// for the answer.
func echoUDP(ctx context.Context, c *warren.Client, name string, to netip.AddrPort, i int) (echo, error) {
	conn, err := c.Dial(ctx, "udp", to.String())
	if err != nil {
		return echo{}, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	e := echo{Who: name, Sent: fmt.Sprintf("datagram %d from %s", i, name)}
	if _, err := io.WriteString(conn, e.Sent); err != nil {
		return echo{}, err
	}
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		return echo{}, fmt.Errorf("%s waiting for bob: %w", name, err)
	}
	e.Got = string(buf[:n])
	return e, nil
}

// serveHTTP serves msg on addr until the returned server is closed, which
// also closes its connections.
func serveHTTP(addr, msg string) (*http.Server, net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, msg)
	})}
	go srv.Serve(ln)
	return srv, ln.Addr(), nil
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
