package session

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/warrenvpn/warren/codec"
	"github.com/warrenvpn/warren/handshake"
	"github.com/warrenvpn/warren/telemetry"
	"github.com/warrenvpn/warren/transport"
)

// DialConfig is the client's side of a handshake.
type DialConfig struct {
	// PrivateKey and PublicKey are the client's Noise static key pair.
	PrivateKey, PublicKey [32]byte
	// ServerPublicKey is the hub's Noise static public key.
	ServerPublicKey [32]byte
	// Version and Tags go into the client hello.
	Version string
	Tags    []string
	// Transport names the carrier, for Peer.
	Transport string
	// Pool lends packet buffers; nil: the session makes its own.
	Pool *Pool
	// Telemetry tunes the session's estimator: keepalive intervals and the
	// dead-peer timeout. The zero value is the default (60/30/10 s, 180 s).
	Telemetry telemetry.Config
	// HealthChanged, if set, is called when the link health changes, on
	// one of the session's goroutines; it must not block.
	HealthChanged func(from, to telemetry.Health)
}

// Dial runs the client side of the handshake over conn and returns the
// session, not yet started, and the hub's hello. A hub that does not answer
// yields an error wrapping ErrNoAnswer; a hub that refuses the client, one
// wrapping a *CloseError with the hub's reason. Dial does not close conn on
// failure; to bound it, close conn (e.g. from a context.AfterFunc).
func Dial(conn transport.Conn, cfg DialConfig) (*Session, handshake.ServerHello, error) {
	var none handshake.ServerHello
	ini, err := handshake.NewInitiator(cfg.PrivateKey, cfg.PublicKey, cfg.ServerPublicKey)
	if err != nil {
		return nil, none, fmt.Errorf("session: %w", err)
	}
	msg1, err := ini.WriteInit(handshake.ClientHello{
		Timestamp: time.Now().UnixNano(),
		Version:   cfg.Version,
		Tags:      cfg.Tags,
	})
	if err != nil {
		return nil, none, fmt.Errorf("session: %w", err)
	}
	frame, err := codec.AppendFrame(nil, codec.HandshakeInit, msg1)
	if err != nil {
		return nil, none, fmt.Errorf("session: %w", err)
	}
	if err := conn.WriteMessage(frame); err != nil {
		return nil, none, fmt.Errorf("session: sending handshake: %w", err)
	}
	msg, err := conn.ReadMessage()
	if err != nil {
		return nil, none, fmt.Errorf("%w: %w", ErrNoAnswer, err)
	}
	t, payload, rest, err := codec.Parse(msg)
	if err != nil || t != codec.HandshakeResp {
		return nil, none, fmt.Errorf("session: handshake: unexpected answer %s: %w", t, errOr(err, ErrMalformed))
	}
	hello, hs, err := ini.ReadResp(payload)
	if err != nil {
		return nil, none, fmt.Errorf("session: handshake: %w", err)
	}
	if len(rest) == 0 && !hello.AssignedPrefix.IsValid() {
		// A refusal's Disconnect may come as a message of its own (QUIC
		// carries one frame per message).
		if m, err := conn.ReadMessage(); err == nil {
			rest = m
		}
	}
	if len(rest) > 0 {
		// The hub knows the client but refuses it: a sealed Disconnect
		// follows, whose code says why (and whether to try again).
		t, payload, _, err := codec.Parse(rest)
		if err == nil && t == codec.Disconnect {
			if body, err := hs.Open(nil, payload); err == nil {
				return nil, none, fmt.Errorf("session: hub refused the client: %w", &CloseError{Reason: ParseReason(body), Remote: true})
			}
		}
		return nil, none, errors.New("session: handshake: unexpected data after the hub's answer")
	}
	if !hello.AssignedPrefix.IsValid() || !hello.Gateway.IsValid() {
		return nil, none, errors.New("session: handshake: hub assigned no address")
	}
	if hello.MTU < 576 || hello.MTU > 65535 {
		return nil, none, fmt.Errorf("session: handshake: hub announced MTU %d", hello.MTU)
	}
	s, err := newSession(conn, hs, hello.MTU, cfg.Pool)
	if err != nil {
		return nil, none, fmt.Errorf("session: handshake: %w", err)
	}
	if err := s.startTelemetry(cfg.Telemetry, cfg.HealthChanged, true); err != nil {
		return nil, none, fmt.Errorf("session: %w", err)
	}
	s.peer = Peer{PublicKey: cfg.ServerPublicKey, Addr: hello.Gateway, Transport: cfg.Transport, Remote: conn.RemoteAddr()}
	return s, hello, nil
}

func errOr(err, def error) error {
	if err == nil {
		return def
	}
	return err
}

// AcceptConfig is the hub's side of a handshake.
type AcceptConfig struct {
	// PrivateKey and PublicKey are the hub's Noise static key pair.
	PrivateKey, PublicKey [32]byte
	// Transport names the carrier, for Peer.
	Transport string
	// Guard refuses a replayed message 1. Required.
	Guard Guard
	// Authorize looks up the client that sent message 1. An error means the
	// hub does not know it: the connection gets no answer. Otherwise the
	// verdict says what to answer.
	Authorize func(key [32]byte, hello handshake.ClientHello, remote netip.AddrPort) (Verdict, error)
	// Admit, if set, is called once message 1 has arrived as one
	// HandshakeInit frame, before any Diffie-Hellman. If it reports false,
	// the handshake is dropped unanswered and Accept returns an error
	// wrapping ErrDropped; otherwise Accept calls done once it has finished
	// with message 1 (read it, authorized it, written message 2).
	Admit func() (done func(), ok bool)
	// Pool lends packet buffers; nil: the session makes its own.
	Pool *Pool
	// Telemetry tunes the session's estimator: keepalive intervals and the
	// dead-peer timeout. The zero value is the default (60/30/10 s, 180 s).
	Telemetry telemetry.Config
	// HealthChanged, if set, is called when the link health changes, on
	// one of the session's goroutines; it must not block.
	HealthChanged func(from, to telemetry.Health)
}

// Verdict is the hub's answer to a client it knows.
type Verdict struct {
	// Hello is the server hello for an accepted client. On a datagram
	// transport its MTU is lowered to at most DatagramMTU.
	Hello handshake.ServerHello
	// Refuse, when set, refuses the client: it gets a server hello without
	// an address and a sealed Disconnect with this reason.
	Refuse Reason
}

// Accept runs the hub side of the handshake over conn. A first message that
// is not one HandshakeInit frame yields an error wrapping ErrMalformed; one
// that does not authenticate, from a key Authorize does not know, or
// replayed (Guard), gets no answer; a client the verdict refuses gets a
// sealed Disconnect and Accept returns a *CloseError. On success the
// session is returned not yet started: Start sends the answer, so the caller
// can make the session reachable first. Accept does not close conn.
func Accept(conn transport.Conn, cfg AcceptConfig) (*Session, handshake.ClientHello, error) {
	var none handshake.ClientHello
	msg, err := conn.ReadMessage()
	if err != nil {
		return nil, none, err
	}
	t, payload, rest, err := codec.Parse(msg)
	if err != nil {
		return nil, none, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if t != codec.HandshakeInit || len(rest) != 0 {
		return nil, none, fmt.Errorf("%w: first message is %s with %d bytes after it", ErrMalformed, t, len(rest))
	}
	if cfg.Admit != nil {
		done, ok := cfg.Admit()
		if !ok {
			return nil, none, ErrDropped
		}
		defer done()
	}
	r, err := handshake.NewResponder(cfg.PrivateKey, cfg.PublicKey)
	if err != nil {
		return nil, none, fmt.Errorf("session: %w", err)
	}
	key, hello, err := r.ReadInit(payload)
	if err != nil {
		return nil, none, fmt.Errorf("session: %w", err)
	}
	remote := conn.RemoteAddr()
	v, err := cfg.Authorize(key, hello, remote)
	if err != nil {
		return nil, none, err
	}
	if err := cfg.Guard.Check(key, hello.Timestamp); err != nil {
		return nil, none, fmt.Errorf("session: %w", err)
	}
	mtu := v.Hello.MTU
	if _, ok := conn.(transport.DatagramConn); ok {
		mtu = min(mtu, DatagramMTU)
	}
	sh := v.Hello
	refused := v.Refuse != (Reason{})
	if refused {
		sh = handshake.ServerHello{}
	}
	sh.MTU = mtu
	msg2, hs, err := r.WriteResp(sh)
	if err != nil {
		return nil, none, fmt.Errorf("session: %w", err)
	}
	out, err := codec.AppendFrame(nil, codec.HandshakeResp, msg2)
	if err != nil {
		return nil, none, fmt.Errorf("session: %w", err)
	}
	if refused {
		p := codec.AppendDisconnect(nil, v.Refuse.Code, v.Refuse.Text)
		if out, err = codec.AppendHeader(out, codec.Disconnect, len(p)+handshake.Overhead); err == nil {
			if out, err = hs.Seal(out, p); err == nil {
				_ = conn.WriteMessage(out)
			}
		}
		return nil, none, &CloseError{Reason: v.Refuse}
	}
	s, err := newSession(conn, hs, mtu, cfg.Pool)
	if err != nil {
		return nil, none, fmt.Errorf("session: %w", err)
	}
	if err := s.startTelemetry(cfg.Telemetry, cfg.HealthChanged, false); err != nil {
		return nil, none, fmt.Errorf("session: %w", err)
	}
	s.pending = out
	s.peer = Peer{PublicKey: key, Addr: sh.AssignedPrefix.Addr(), Transport: cfg.Transport, Remote: remote}
	return s, hello, nil
}
