package quic

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/warrenvpn/warren/transport"
)

// ErrPinMismatch reports that the server's leaf certificate does not hash to
// DialConfig.ServerCertHash. It is transport.ErrPinMismatch, shared with the
// WebSocket transport.
var ErrPinMismatch = transport.ErrPinMismatch

// keepAlivePeriod is how often a client sends a QUIC PING when it has nothing
// else to send, keeping NAT bindings and the server's idle timer alive even
// while the session is quiet. quic-go sends them at least every half idle
// timeout.
const keepAlivePeriod = 15 * time.Second

// DialConfig configures Dial. The zero value verifies the server through
// WebPKI with the system roots.
type DialConfig struct {
	// ServerCertHash pins the server's certificate: base64 of the SHA-256 of
	// its leaf's DER, as ws.CertHash computes it. If set, the leaf's hash is
	// the only check made: no chain, name or expiry verification, so a
	// self-signed certificate works. If empty, the server is verified
	// through WebPKI with TLSConfig's RootCAs (nil: the system roots).
	ServerCertHash string

	// TLSConfig is the base TLS configuration, e.g. RootCAs or ServerName.
	// It is cloned, not modified. If nil, an empty config is used.
	// NextProtos is replaced with ALPN. If ServerName is empty, the host
	// part of Dial's address is used.
	TLSConfig *tls.Config

	// HandshakeTimeout bounds the name lookup, the QUIC handshake and the
	// opening of the stream together, on top of ctx. If zero,
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration

	// MaxIdleTimeout closes the connection after this long without hearing
	// from the server; the smaller of the two sides' values applies. The
	// client sends keepalives well within it. If zero,
	// DefaultMaxIdleTimeout.
	MaxIdleTimeout time.Duration

	// Control, if not nil, is called on the UDP socket before it is bound,
	// as net.ListenConfig.Control: e.g. to set SO_MARK so that a full
	// tunnel's policy routing leaves the connection to the hub outside the
	// tunnel.
	Control func(network, address string, c syscall.RawConn) error
}

// Dial connects to the Warren QUIC server at addr, "host:port" with host a
// name or an IP address, opens the connection's stream and returns the
// connection. If host has several addresses, Dial uses the first. ctx bounds
// the connection setup only, not the returned Conn.
//
// The stream reaches the server with the first WriteMessage: the server's
// Accept returns the connection only then, and closes it if that takes longer
// than its handshake timeout.
//
// If cfg.ServerCertHash is set and the server presents another certificate,
// the error wraps ErrPinMismatch.
func Dial(ctx context.Context, addr string, cfg DialConfig) (*Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("quic: dial %s: %w", addr, err)
	}
	tlsConf, err := clientTLSConfig(host, cfg)
	if err != nil {
		return nil, err
	}
	timeout := cfg.HandshakeTimeout
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	idle := cfg.MaxIdleTimeout
	if idle <= 0 {
		idle = DefaultMaxIdleTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	raddr, err := resolve(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("quic: dial %s: %w", addr, err)
	}
	network := "udp4"
	if raddr.Addr().Is6() {
		network = "udp6"
	}
	lc := net.ListenConfig{Control: cfg.Control}
	pc, err := lc.ListenPacket(ctx, network, ":0")
	if err != nil {
		return nil, fmt.Errorf("quic: dial %s: %w", addr, err)
	}
	udp, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("quic: dial %s: ListenPacket returned a %T", addr, pc)
	}
	tr := &quic.Transport{Conn: udp, ConnectionIDLength: ConnIDLen}
	release := func() {
		_ = tr.Close()
		_ = udp.Close()
	}
	qc, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(raddr), tlsConf, &quic.Config{
		HandshakeIdleTimeout:  timeout,
		MaxIdleTimeout:        idle,
		KeepAlivePeriod:       keepAlivePeriod,
		MaxIncomingStreams:    -1, // the server opens no streams
		MaxIncomingUniStreams: -1,
		EnableDatagrams:       true,
	})
	if err != nil {
		release()
		return nil, fmt.Errorf("quic: dial %s: %w", addr, err)
	}
	if !qc.ConnectionState().SupportsDatagrams.Remote {
		_ = qc.CloseWithError(closeProtocolError, "DATAGRAM support required")
		release()
		return nil, fmt.Errorf("quic: dial %s: server does not support DATAGRAM frames", addr)
	}
	st, err := qc.OpenStreamSync(ctx)
	if err != nil {
		_ = qc.CloseWithError(closeProtocolError, "could not open stream")
		release()
		return nil, fmt.Errorf("quic: dial %s: open stream: %w", addr, err)
	}
	return newConn(qc, st, release), nil
}

// resolve turns "host:port" into an address, looking host up if it is not
// an IP address.
func resolve(ctx context.Context, addr string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port, err := net.DefaultResolver.LookupPort(ctx, "udp", portStr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if len(ips) == 0 {
		return netip.AddrPort{}, errors.New("no addresses for " + host)
	}
	return netip.AddrPortFrom(ips[0].Unmap(), uint16(port)), nil
}

// clientTLSConfig builds the TLS configuration Dial uses from cfg for a
// server at host.
func clientTLSConfig(host string, cfg DialConfig) (*tls.Config, error) {
	var conf *tls.Config
	if cfg.TLSConfig != nil {
		conf = cfg.TLSConfig.Clone()
	} else {
		conf = &tls.Config{}
	}
	conf.MinVersion = tls.VersionTLS13
	conf.NextProtos = []string{ALPN}
	if conf.ServerName == "" {
		conf.ServerName = host
	}
	if cfg.ServerCertHash == "" {
		return conf, nil
	}
	if err := transport.VerifyPin(conf, cfg.ServerCertHash); err != nil {
		return nil, fmt.Errorf("quic: DialConfig.ServerCertHash: %w", err)
	}
	return conf, nil
}
