// Package wg is Warren's WireGuard transport: one wireguard-go device whose
// tun.Device is not a kernel TUN but a bridge into Warren's packet pipeline.
//
// Packets that peers send come out of the bridge, already decrypted and
// checked against the sending peer's AllowedIPs, to [Config.Receive].
// Packets the hub sends to peers go into the bridge with [Device.Send];
// wireguard-go picks the peer by destination address (cryptokey routing),
// encrypts and sends them. Because wireguard-go drops every received packet
// whose source address is outside its peer's AllowedIPs, the source address
// of a packet handed to Receive identifies the peer that sent it. A Warren
// client in WireGuard mode uses the same Device with one peer, the hub.
//
// The package is built on golang.zx2c4.com/wireguard (wireguard-go), the
// userspace implementation maintained by the WireGuard authors: it is the
// protocol every other WireGuard speaks, and its tun.Device and conn.Bind
// seams let the device run over a packet queue and plain UDP sockets
// without root, a kernel module or a daemon. The device is configured
// through its UAPI text protocol (IpcSet / IpcGet), the same one wg(8) uses,
// so this package relies on nothing of wireguard-go that is not a public API.
//
// A Device polls its peers' state (IpcGet, every [Config.PollInterval]) and
// reports changes through [Config.PeerEvent]: Up when a peer that is new or
// down has completed a handshake and is heard from, Down when a peer that is
// up has sent nothing, not even a keepalive or handshake, for
// [Config.DeadPeerTimeout], or has been removed. A peer that comes back
// after Down is reported Up again, and a peer that is up and whose endpoint
// changed (it roamed) is reported Up again with Roamed set. Events come from
// one goroutine the Device owns, in order, and none come after Close
// returns.
//
// A [Session] is one peer seen as a session of the pipeline: it sends a
// batch of packets to its peer in one call and counts both directions.
//
// [Device.Send] never blocks the hub's data plane: it copies packets into a
// bounded queue (1024 packets, buffers reused, no allocation in steady
// state) that wireguard-go reads in batches, and drops and counts what does
// not fit.
//
// Unlike the WebSocket and QUIC listeners, the WireGuard port needs no
// pre-auth budget of Warren's own, because wireguard-go keeps no state for a
// peer that has not authenticated: a handshake initiation is dropped unless
// its MAC1 is keyed with the hub's public key, and it creates nothing unless
// it decrypts to the static key of a configured peer. Initiations wait in a
// bounded queue (1024; more are dropped, the UDP reader never blocks). When
// that queue is an eighth full the device is under load (for at least a
// second): an initiation must then carry a MAC2 made with a cookie the hub
// sends to its source address, which proves the address is not spoofed
// before any Diffie-Hellman work, and each source IP is held to 20
// handshakes a second (burst 5). Silent peers cost nothing: there is no
// connection to hold open. [Config.Reject] drops datagrams from refused
// source addresses before any of this, as the other listeners refuse
// connections before TLS.
package wg

import (
	"bufio"
	"context"
	"crypto/ecdh"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
)

// Defaults for the zero values of [Config] fields.
const (
	// DefaultMTU is the tunnel MTU when Config.MTU is 0: wireguard-go's and
	// wg-quick's default, 1500 minus the 80 bytes of an IPv6 + UDP +
	// WireGuard header.
	DefaultMTU = device.DefaultMTU
	// DefaultDeadPeerTimeout is how long a peer may stay silent before it is
	// reported Down when Config.DeadPeerTimeout is 0 (DESIGN §6).
	DefaultDeadPeerTimeout = 180 * time.Second
	// DefaultPollInterval is how often peer handshakes are checked when
	// Config.PollInterval is 0.
	DefaultPollInterval = time.Second
)

// Limits checked by New.
const (
	// MinMTU is the smallest MTU New accepts: the minimum IPv4 MTU.
	MinMTU = 68
	// MaxMTU is the largest MTU New accepts: the largest packet a
	// WireGuard transport message can carry.
	MaxMTU = device.MaxContentSize
)

// ErrUnknownPeer is wrapped by RemovePeer's error when the device has no
// peer with the key given.
var ErrUnknownPeer = errors.New("wg: unknown peer")

// ConfigError is the error New and AddPeer return for a bad field: Field
// names the field ("MTU", "Peer.AllowedIPs[1]"), Value the offending value,
// Reason why.
type ConfigError struct {
	Field  string
	Value  string
	Reason string
}

// Error returns a message of the form
// `wg: invalid Peer.Endpoint "1.2.3.4:0": port must not be 0`.
func (e *ConfigError) Error() string {
	if e.Value != "" {
		return fmt.Sprintf("wg: invalid %s %q: %s", e.Field, e.Value, e.Reason)
	}
	return fmt.Sprintf("wg: invalid %s: %s", e.Field, e.Reason)
}

// Config configures a [Device]. Only PrivateKey and Receive are required.
type Config struct {
	// PrivateKey is the device's WireGuard private key. Required: a zero
	// key is an error.
	PrivateKey [32]byte

	// ListenPort is the UDP port to listen on, on all addresses. If 0, the
	// system picks a free port; Device.Port says which.
	ListenPort int

	// FwMark, if not 0, is set as SO_MARK on the device's UDP sockets
	// (Linux; wireguard-go's fwmark), so that a full tunnel's policy
	// routing leaves the WireGuard datagrams outside the tunnel.
	FwMark uint32

	// MTU is the tunnel MTU: the largest IP packet Send accepts and the
	// size wireguard-go pads to. If 0, DefaultMTU (1420).
	MTU int

	// Receive takes batches of decrypted IP packets from peers. Every
	// packet's source address is inside the AllowedIPs of the peer that
	// sent it. It is called on wireguard-go's goroutines, possibly
	// concurrently for different peers; it must not retain bufs after it
	// returns and must not call RemovePeer or Close. It may call Send.
	// Required unless ReceiveOffset is set.
	Receive func(bufs [][]byte)

	// ReceiveOffset, if not nil, is called instead of Receive with the
	// batch as wireguard-go wrote it: packet i is bufs[i][offset:], with
	// the headroom bufs[i][:offset] free to write into, so no layer
	// beyond copies a packet for its header. The rest is as Receive.
	ReceiveOffset func(bufs [][]byte, offset int)

	// PeerEvent, if not nil, is called when a peer completes a handshake
	// after being new or down (Up, with its endpoint), when a peer that is
	// up roams to a new endpoint (Up and Roamed), and when it has been
	// silent for DeadPeerTimeout or has been removed (Down). It is
	// called from one goroutine the Device owns, in order; it must not
	// block long and must not call Close.
	PeerEvent func(PeerEvent)

	// DeadPeerTimeout is how long a peer that is up may go without any
	// packet (data, keepalive or handshake) before it is reported Down.
	// If 0, DefaultDeadPeerTimeout (180 s).
	DeadPeerTimeout time.Duration

	// PollInterval is how often the peers' handshake times and counters
	// are read (through IpcGet) to produce PeerEvents. If 0,
	// DefaultPollInterval (1 s).
	PollInterval time.Duration

	// Bind carries WireGuard's UDP datagrams. If nil,
	// conn.NewDefaultBind(): real UDP sockets on ListenPort.
	Bind conn.Bind

	// Reject, if not nil, is asked about the source address of every
	// received datagram (IPv4-mapped addresses unmapped) before
	// wireguard-go sees it; a datagram it reports true for is dropped and
	// counted (Device.Rejected), so a rejected source can neither
	// handshake, nor send data, nor move a peer's endpoint to itself. It
	// is called on the receive goroutines, concurrently, once per
	// datagram: it must be fast and must not block. If nil, nothing is
	// filtered. With a Reject the Bind is wrapped, so wireguard-go's
	// sticky-socket route listener (Linux, conn.StdNetBind only) does not
	// run: a source address that moves between the hub's own interfaces
	// is relearned from the peer's next packet instead.
	Reject func(netip.Addr) bool

	// Logger receives the device's logs, wireguard-go's included (its
	// verbose lines at Debug, its errors at Error). If nil, nothing is
	// logged.
	Logger *slog.Logger
}

// Peer is a WireGuard peer of the device.
type Peer struct {
	// PublicKey is the peer's public key. Required.
	PublicKey [32]byte
	// AllowedIPs are the addresses the peer may send from and that Send
	// routes to it. Empty: the peer can neither send nor be sent to.
	AllowedIPs []netip.Prefix
	// Endpoint is where to send the peer's first packets. Optional: if
	// zero, the device waits for the peer to reach it; either way the
	// endpoint follows the peer when it roams.
	Endpoint netip.AddrPort
	// PersistentKeepalive is the interval, in seconds, of keepalives sent
	// to keep a NAT mapping open. 0 disables them.
	PersistentKeepalive int
	// PresharedKey, if not nil, is mixed into the handshake for
	// post-quantum resistance.
	PresharedKey *[32]byte
}

// PeerEvent reports a peer coming up or going down.
type PeerEvent struct {
	// PublicKey identifies the peer.
	PublicKey [32]byte
	// Up is true when the peer completed a handshake, false when it went
	// silent or was removed.
	Up bool
	// Roamed is true in an Up event for a peer that was up already and
	// whose endpoint changed: it sent authenticated packets from a new
	// address. The device notices a roam at its next poll, so within
	// Config.PollInterval of the first such packet.
	Roamed bool
	// Endpoint is the peer's address as last seen by the device; it may
	// be zero in a Down event for a peer that never had one.
	Endpoint netip.AddrPort
}

// PeerStatus is what the device knows about one peer.
type PeerStatus struct {
	// PublicKey identifies the peer.
	PublicKey [32]byte
	// Endpoint is the peer's current address, zero if none is known yet.
	Endpoint netip.AddrPort
	// LastHandshake is when the last handshake completed, zero if none has.
	LastHandshake time.Time
	// RxBytes and TxBytes count WireGuard message bytes from and to the peer.
	RxBytes, TxBytes uint64
	// AllowedIPs are the peer's AllowedIPs, in wireguard-go's order.
	AllowedIPs []netip.Prefix
}

// Stats counts packets through the bridge between the pipeline and
// wireguard-go.
type Stats struct {
	// Received counts packets from peers handed to Config.Receive.
	Received uint64
	// Sent counts packets from Send that wireguard-go took for encryption
	// (it drops those with no peer for their destination).
	Sent uint64
	// Dropped counts packets Send did not queue: the queue was full, or the
	// packet was empty or larger than the MTU.
	Dropped uint64
}

// Device is a WireGuard device bridged to Warren's packet pipeline. Its
// methods are safe for concurrent use.
type Device struct {
	wg     *device.Device
	bridge *bridge
	log    *slog.Logger
	pub    [32]byte
	port   uint16

	deadPeerTimeout time.Duration
	pollInterval    time.Duration
	peerEvent       func(PeerEvent)
	rejected        atomic.Uint64

	closed   atomic.Bool
	stop     chan struct{}
	routines sync.WaitGroup
}

// New validates cfg, creates the wireguard-go device, sets its private key
// and listen port and brings it up. The device has no peers yet.
func New(cfg Config) (*Device, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.DeadPeerTimeout == 0 {
		cfg.DeadPeerTimeout = DefaultDeadPeerTimeout
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Bind == nil {
		cfg.Bind = conn.NewDefaultBind()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	priv, err := ecdh.X25519().NewPrivateKey(cfg.PrivateKey[:])
	if err != nil {
		return nil, fmt.Errorf("wg: private key: %w", err)
	}

	d := &Device{
		bridge:          newBridge(cfg.MTU, cfg.Receive),
		log:             cfg.Logger,
		deadPeerTimeout: cfg.DeadPeerTimeout,
		pollInterval:    cfg.PollInterval,
		peerEvent:       cfg.PeerEvent,
		stop:            make(chan struct{}),
	}
	d.bridge.receiveAt = cfg.ReceiveOffset
	copy(d.pub[:], priv.PublicKey().Bytes())
	if cfg.Reject != nil {
		cfg.Bind = &rejectBind{Bind: cfg.Bind, reject: cfg.Reject, rejected: &d.rejected}
	}
	d.wg = device.NewDevice(d.bridge, cfg.Bind, deviceLogger(cfg.Logger))

	uapi := fmt.Sprintf("private_key=%s\nlisten_port=%d\n", hex.EncodeToString(cfg.PrivateKey[:]), cfg.ListenPort)
	if cfg.FwMark != 0 {
		uapi += fmt.Sprintf("fwmark=%d\n", cfg.FwMark)
	}
	if err := d.wg.IpcSet(uapi); err != nil {
		d.wg.Close()
		return nil, fmt.Errorf("wg: configure device: %w", err)
	}
	if err := d.wg.Up(); err != nil {
		d.wg.Close()
		return nil, fmt.Errorf("wg: listen on UDP port %d: %w", cfg.ListenPort, err)
	}
	port, err := d.listenPort()
	if err != nil {
		d.wg.Close()
		return nil, err
	}
	d.port = port
	// Tell wireguard-go's event reader the interface is up, as a TUN does;
	// the device is up already, so this changes nothing.
	d.bridge.events <- tunEventUp

	d.routines.Add(1)
	go d.watchPeers()
	d.log.Info("wireguard device up", "port", d.port, "publicKey", keyString(d.pub))
	return d, nil
}

func (c *Config) validate() error {
	switch {
	case c.PrivateKey == [32]byte{}:
		return &ConfigError{Field: "PrivateKey", Reason: "must not be zero"}
	case c.ListenPort < 0 || c.ListenPort > 65535:
		return &ConfigError{Field: "ListenPort", Value: strconv.Itoa(c.ListenPort), Reason: "must be 0 to 65535"}
	case c.MTU != 0 && (c.MTU < MinMTU || c.MTU > MaxMTU):
		return &ConfigError{Field: "MTU", Value: strconv.Itoa(c.MTU), Reason: fmt.Sprintf("must be %d to %d", MinMTU, MaxMTU)}
	case c.Receive == nil && c.ReceiveOffset == nil:
		return &ConfigError{Field: "Receive", Reason: "must not be nil"}
	case c.DeadPeerTimeout < 0:
		return &ConfigError{Field: "DeadPeerTimeout", Value: c.DeadPeerTimeout.String(), Reason: "must not be negative"}
	case c.PollInterval < 0:
		return &ConfigError{Field: "PollInterval", Value: c.PollInterval.String(), Reason: "must not be negative"}
	}
	return nil
}

// listenPort reads the bound UDP port back from the device.
func (d *Device) listenPort() (uint16, error) {
	s, err := d.wg.IpcGet()
	if err != nil {
		return 0, fmt.Errorf("wg: read device state: %w", err)
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "listen_port=")
		if !ok {
			continue
		}
		p, err := strconv.ParseUint(v, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("wg: read listen port %q: %w", v, err)
		}
		return uint16(p), nil
	}
	return 0, errors.New("wg: device reports no listen port")
}

// Port returns the UDP port the device listens on.
func (d *Device) Port() uint16 { return d.port }

// PublicKey returns the device's public key.
func (d *Device) PublicKey() [32]byte { return d.pub }

// Send queues a batch of IP packets toward peers; wireguard-go routes each
// by its destination address to the peer whose AllowedIPs hold it. Send
// copies the packets and never blocks: a packet that finds the queue full,
// or is empty or larger than the MTU, is dropped and counted in
// Stats.Dropped. It does not retain bufs. After Close it returns an error
// wrapping net.ErrClosed.
func (d *Device) Send(bufs [][]byte) error { return d.SendOffset(bufs, 0) }

// SendOffset is Send for packets at an offset in their buffers: packet i
// is bufs[i][offset:].
func (d *Device) SendOffset(bufs [][]byte, offset int) error {
	if d.closed.Load() {
		return fmt.Errorf("wg: send: %w", net.ErrClosed)
	}
	d.bridge.enqueue(bufs, offset)
	return nil
}

// Stats returns the bridge's packet counters.
func (d *Device) Stats() Stats {
	return Stats{
		Received: d.bridge.received.Load(),
		Sent:     d.bridge.sent.Load(),
		Dropped:  d.bridge.dropped.Load(),
	}
}

// Rejected counts the datagrams dropped because Config.Reject refused
// their source address.
func (d *Device) Rejected() uint64 { return d.rejected.Load() }

// Close stops peer watching, closes the wireguard-go device (its sockets,
// its goroutines and the bridge) and waits for them. A second Close returns
// an error wrapping net.ErrClosed.
func (d *Device) Close() error {
	if d.closed.Swap(true) {
		return fmt.Errorf("wg: close: %w", net.ErrClosed)
	}
	close(d.stop)
	d.routines.Wait()
	d.wg.Close()
	d.log.Info("wireguard device closed", "port", d.port)
	return nil
}

// deviceLogger adapts l to wireguard-go's printf-style Logger. Verbose lines
// are formatted only when Debug is enabled: wireguard-go logs one for every
// keepalive.
func deviceLogger(l *slog.Logger) *device.Logger {
	l = l.With("component", "wireguard-go")
	return &device.Logger{
		Verbosef: func(format string, args ...any) {
			if l.Enabled(context.Background(), slog.LevelDebug) {
				l.Debug(fmt.Sprintf(format, args...))
			}
		},
		Errorf: func(format string, args ...any) {
			l.Error(fmt.Sprintf(format, args...))
		},
	}
}

// keyString is the base64 form of a key, as wg prints it.
func keyString(k [32]byte) string { return base64.StdEncoding.EncodeToString(k[:]) }
