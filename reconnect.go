package warren

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/warrenvpn/warren/codec"
)

// ReconnectConfig says how a Client comes back after losing its session
// (hub restart, network gone, dead peer, the hub's DisconnectClient). A
// deliberate Disconnect or Close never reconnects, and neither does a client
// the hub ends or refuses for good: disabled, expired, removed, key rotated,
// remote address not allowed, or replaced by a newer session with the same
// key (two holders of one key would otherwise take turns evicting each
// other). The hub's Disconnect code decides, never its text.
type ReconnectConfig struct {
	// Disabled turns reconnecting off.
	Disabled bool `json:"disabled,omitempty"`
	// MaxAttempts bounds the attempts after one loss; 0 retries until Close.
	MaxAttempts int `json:"maxAttempts,omitempty"`
	// InitialBackoffMs is the wait before the first attempt; 0: 500 ms.
	InitialBackoffMs int `json:"initialBackoffMs,omitempty"`
	// MaxBackoffMs caps the wait, which doubles after each failed attempt;
	// 0: 30 s. Each wait is jittered by up to ±20 %.
	MaxBackoffMs int `json:"maxBackoffMs,omitempty"`
}

func (r ReconnectConfig) backoff(attempt int) time.Duration {
	lo := time.Duration(r.InitialBackoffMs) * time.Millisecond
	if lo <= 0 {
		lo = 500 * time.Millisecond
	}
	hi := time.Duration(r.MaxBackoffMs) * time.Millisecond
	if hi <= 0 {
		hi = 30 * time.Second
	}
	d := lo
	for i := 0; i < attempt && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	jitter := time.Duration((rand.Float64()*0.4 - 0.2) * float64(d))
	return d + jitter
}

func (r ReconnectConfig) check() error {
	if r.MaxAttempts < 0 {
		return configErr("reconnect.maxAttempts", "", "must be 0 (unbounded) or more")
	}
	if r.InitialBackoffMs < 0 || r.MaxBackoffMs < 0 || (r.MaxBackoffMs > 0 && r.InitialBackoffMs > r.MaxBackoffMs) {
		return configErr("reconnect", "", "backoffs must be positive and initialBackoffMs at most maxBackoffMs")
	}
	return nil
}

// reconnect runs after a session was lost, until the client is connected
// again, closed, disconnected on purpose, refused for good, or out of attempts.
func (c *Client) reconnect() {
	defer c.wg.Done()
	r := c.cfg.Reconnect
	for attempt := 0; r.MaxAttempts == 0 || attempt < r.MaxAttempts; attempt++ {
		wait := time.NewTimer(r.backoff(attempt))
		select {
		case <-c.closing.Done():
			wait.Stop()
			return
		case <-wait.C:
		}
		// Close cancels the attempt too.
		ctx, cancel := context.WithTimeout(c.closing, handshakeTimeout)
		info, err := c.connect(ctx, true)
		cancel()
		switch {
		case err == nil:
			c.log.Info("reconnected", "ip", info.AssignedIP, "transport", info.Transport, "attempt", attempt+1)
			c.events.publish(Reconnected{EventTime{time.Now()}, info})
			return
		case errors.Is(err, errDeliberate):
			c.log.Info("not reconnecting", "err", err)
			return
		}
		if code, ok := disconnectCode(err); ok && permanentCode(code) {
			c.log.Info("not reconnecting", "err", err)
			c.events.publish(Error{EventTime{time.Now()}, err})
			return
		}
		c.log.Info("reconnect attempt failed", "attempt", attempt+1, "err", err)
		c.events.publish(Error{EventTime{time.Now()}, err})
	}
	c.log.Warn("giving up reconnecting", "attempts", r.MaxAttempts)
}

// permanentCode reports whether a session ended or refused with code is over
// for good: trying again would be refused again, or (replaced) would fight
// another holder of the client's key. Every other code, including one this
// version does not know, is a loss worth reconnecting after.
func permanentCode(code codec.DisconnectCode) bool {
	switch code {
	case codec.DisconnectDisabled, codec.DisconnectKeyRotated, codec.DisconnectExpired,
		codec.DisconnectRemoved, codec.DisconnectRefused, codec.DisconnectReplaced:
		return true
	}
	return false
}

// errDeliberate: the user disconnected or closed the client meanwhile.
var errDeliberate = errors.New("warren: client disconnected on purpose")
