package session

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/warrenvpn/warren/codec"
	"github.com/warrenvpn/warren/telemetry"
)

// Keepalives and the telemetry they feed (DESIGN §6). The client (the
// initiator) sends a Keepalive at the interval its estimator asks for (60 s
// healthy, 30 s degraded, 10 s critical, 30 s before health is known) and
// measures RTT, jitter and loss from the acks; the hub answers each one and
// measures loss from the sequence gaps. Both sides declare the peer dead
// after the estimator's DeadAfter (default 180 s) without hearing from it and
// end the session with DisconnectDeadPeer: the hub telling the client, the
// client without a word (the hub is gone).
//
// Every stream message tells the estimator the peer is alive at once. QUIC
// datagrams only move LastReceive, which the keepalive goroutine passes on
// before each check: keepalives and their acks travel on the stream, so a
// live peer is heard on the stream at least once per interval anyway.

// DatagramHeaderLen is what a QUIC datagram carries in front of its
// ciphertext: the type byte and the 8-byte counter. With handshake.Overhead
// behind it, it is Warren's own per-datagram overhead.
const DatagramHeaderLen = datagramHeader

// keepalive payload: sequence u32, send time u64 (ns, the sender's clock).
const keepaliveLen = 12

// keepaliveRun is a session's keepalive state.
type keepaliveRun struct {
	est       *telemetry.Estimator
	initiator bool // sends keepalives
	onHealth  func(from, to telemetry.Health)
	// kick wakes the keepalive goroutine when health, and with it the
	// interval, changed.
	kick chan struct{}
	// synced is the LastReceive last passed on to the estimator; owned by
	// the keepalive goroutine.
	synced    int64
	deadAfter time.Duration
}

// startTelemetry makes the session's estimator; the dead-peer timer starts
// now.
func (s *Session) startTelemetry(cfg telemetry.Config, onHealth func(from, to telemetry.Health), initiator bool) error {
	est, err := telemetry.New(cfg)
	if err != nil {
		return err
	}
	s.telemetry = &keepaliveRun{est: est, initiator: initiator, onHealth: onHealth, kick: make(chan struct{}, 1), synced: s.lastRecv.Load(), deadAfter: cmp.Or(cfg.DeadAfter, telemetry.DefaultDeadAfter)}
	return nil
}

// Quality returns the session's link quality. On the hub's side of a
// session it has loss and health from keepalive gaps but no RTT.
func (s *Session) Quality() telemetry.Quality {
	if s.telemetry == nil {
		return telemetry.Quality{}
	}
	return s.telemetry.est.Quality()
}

// KeepaliveInterval is the interval the session's keepalives follow now.
func (s *Session) KeepaliveInterval() time.Duration {
	if s.telemetry == nil {
		return 0
	}
	return s.telemetry.est.Interval()
}

func parseKeepalive(b []byte) (seq uint32, sent time.Time, err error) {
	if len(b) != keepaliveLen {
		return 0, time.Time{}, fmt.Errorf("session: keepalive payload is %d bytes, want %d", len(b), keepaliveLen)
	}
	return binary.BigEndian.Uint32(b), time.Unix(0, int64(binary.BigEndian.Uint64(b[4:]))), nil
}

// heard tells the estimator that a stream message arrived.
func (s *Session) heard() {
	if s.telemetry != nil {
		s.telemetry.est.Heard()
	}
}

// keepaliveReceived feeds a peer's Keepalive to the estimator (the hub).
func (s *Session) keepaliveReceived(body []byte) {
	if s.telemetry == nil || s.telemetry.initiator {
		return
	}
	if seq, _, err := parseKeepalive(body); err == nil {
		s.updated(s.telemetry.est.Received(seq))
	}
}

// keepaliveAcked feeds an ack of our Keepalive to the estimator (the client).
func (s *Session) keepaliveAcked(body []byte) {
	seq, sent, err := parseKeepalive(body)
	if err != nil {
		return
	}
	s.rtt.Store(int64(time.Since(sent)))
	if s.telemetry != nil && s.telemetry.initiator {
		s.updated(s.telemetry.est.Acked(seq))
	}
}

// updated reports a health change and wakes the keepalive goroutine, whose
// interval follows health.
func (s *Session) updated(u telemetry.Update) {
	if !u.HealthChanged {
		return
	}
	if s.telemetry.onHealth != nil {
		s.telemetry.onHealth(u.Previous, u.Health)
	}
	select {
	case s.telemetry.kick <- struct{}{}:
	default:
	}
}

// keepaliveLoop sends the initiator's keepalives at the interval the
// estimator asks for, settles overdue ones, and ends the session when the
// estimator declares the peer dead. On the hub it only does the latter two.
func (s *Session) keepaliveLoop() {
	est := s.telemetry.est
	var buf [keepaliveLen]byte
	var seq uint32
	lastSent := time.Now()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		next := est.NextCheck()
		if s.telemetry.initiator {
			if k := lastSent.Add(est.Interval()); next.IsZero() || k.Before(next) {
				next = k
			}
		}
		t.Reset(max(time.Until(next), 0))
		select {
		case <-s.done:
			return
		case <-s.telemetry.kick:
			continue // the interval changed: plan again
		case <-t.C:
		}
		if r := s.lastRecv.Load(); r != s.telemetry.synced {
			s.telemetry.synced = r
			est.Heard()
		}
		u := est.Check()
		s.updated(u)
		if u.Dead {
			r := Reason{codec.DisconnectDeadPeer, "dead peer: nothing heard for " + s.telemetry.deadAfter.String()}
			s.close(r, !s.telemetry.initiator, s.telemetry.initiator)
			return
		}
		now := time.Now()
		if s.telemetry.initiator && !now.Before(lastSent.Add(est.Interval())) {
			seq++
			binary.BigEndian.PutUint32(buf[:4], seq)
			binary.BigEndian.PutUint64(buf[4:], uint64(now.UnixNano()))
			est.Sent(seq)
			s.enqueue(codec.Keepalive, buf[:])
			lastSent = now
		}
	}
}
