package ws

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/warrenvpn/warren/transport"
)

// DefaultHandshakeTimeout bounds the TLS handshake and the WebSocket upgrade
// when a config leaves HandshakeTimeout zero.
const DefaultHandshakeTimeout = 10 * time.Second

// dialWriteBufferSize is the client's write buffer. A client masks every
// frame in this buffer, so it caps the WebSocket frame size: 16 KiB keeps a
// frame within one TLS record. A client has one connection, so the size
// costs little.
const dialWriteBufferSize = 16 << 10

// ErrPinMismatch reports that the server's leaf certificate does not hash to
// DialConfig.ServerCertHash. The error Dial returns wraps it and says which
// hash was expected and which one the server presented. It is
// transport.ErrPinMismatch, shared with the QUIC transport.
var ErrPinMismatch = transport.ErrPinMismatch

// DialConfig configures Dial. The zero value verifies the server through
// WebPKI with the system roots.
type DialConfig struct {
	// ServerCertHash pins the server's certificate: CertHash of its leaf
	// (base64 of the SHA-256 of the DER). If set, the leaf's hash is the only
	// check made: no chain, name or expiry verification, so a self-signed
	// certificate works. If empty, the server is verified through WebPKI
	// with TLSConfig's RootCAs (nil: the system roots).
	ServerCertHash string

	// TLSConfig is the base TLS configuration, e.g. RootCAs or ServerName.
	// It is cloned, not modified. If nil, an empty config is used. If its
	// MinVersion is zero, TLS 1.2 is the minimum.
	TLSConfig *tls.Config

	// HandshakeTimeout bounds the TCP connect, the TLS handshake and the
	// WebSocket upgrade together, on top of ctx. If zero,
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration

	// Control, if not nil, is called on the TCP socket before it connects,
	// as net.Dialer.Control: e.g. to set SO_MARK so that a full tunnel's
	// policy routing leaves the connection to the hub outside the tunnel.
	Control func(network, address string, c syscall.RawConn) error
}

// Dial connects to rawURL, a "wss://host[:port][/path]" URL (port 443 if
// omitted), and returns the WebSocket connection. ctx bounds the connection
// setup only, not the returned Conn.
//
// If cfg.ServerCertHash is set and the server presents another certificate,
// the error wraps ErrPinMismatch.
func Dial(ctx context.Context, rawURL string, cfg DialConfig) (*Conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("ws: dial: bad url %q: %w", rawURL, err)
	}
	if u.Scheme != "wss" {
		return nil, fmt.Errorf("ws: dial: url %q: scheme must be wss", rawURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("ws: dial: url %q: no host", rawURL)
	}
	tlsConf, err := clientTLSConfig(cfg)
	if err != nil {
		return nil, err
	}
	timeout := cfg.HandshakeTimeout
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	nd := net.Dialer{Control: cfg.Control}
	d := websocket.Dialer{
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := nd.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetNoDelay(true)
			}
			return c, nil
		},
		TLSClientConfig:  tlsConf,
		HandshakeTimeout: timeout,
		WriteBufferSize:  dialWriteBufferSize,
	}
	wc, resp, err := d.DialContext(ctx, u.String(), nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("ws: dial %s: %w (http status %s)", u.Redacted(), err, resp.Status)
		}
		return nil, fmt.Errorf("ws: dial %s: %w", u.Redacted(), err)
	}
	tc, ok := wc.NetConn().(*tls.Conn)
	if !ok {
		wc.NetConn().Close()
		return nil, fmt.Errorf("ws: dial %s: connection is not TLS", u.Redacted())
	}
	raw := tc.NetConn()
	remote, _ := addrPort(raw.RemoteAddr())
	return newConn(wc, raw, remote), nil
}

// clientTLSConfig builds the TLS configuration Dial uses from cfg.
func clientTLSConfig(cfg DialConfig) (*tls.Config, error) {
	var conf *tls.Config
	if cfg.TLSConfig != nil {
		conf = cfg.TLSConfig.Clone()
	} else {
		conf = &tls.Config{}
	}
	if conf.MinVersion == 0 {
		conf.MinVersion = tls.VersionTLS12
	}
	// The server speaks HTTP/1.1 only; never negotiate h2.
	conf.NextProtos = nil
	if cfg.ServerCertHash == "" {
		return conf, nil
	}
	if err := transport.VerifyPin(conf, cfg.ServerCertHash); err != nil {
		return nil, fmt.Errorf("ws: DialConfig.ServerCertHash: %w", err)
	}
	return conf, nil
}
