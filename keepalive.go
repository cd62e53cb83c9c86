package warren

import (
	"errors"
	"strconv"
	"time"

	"github.com/warrenvpn/warren/telemetry"
)

// KeepaliveConfig tunes the keepalives that measure a session's link and
// detect a dead peer (package telemetry). All values are milliseconds
// (integers in JSON too); 0 selects the default. The client sends keepalives
// at the interval of the link's health; both sides end a session whose peer
// has been silent for DeadPeerTimeoutMs.
type KeepaliveConfig struct {
	// HealthyIntervalMs, DegradedIntervalMs and CriticalIntervalMs are the
	// keepalive intervals for each link health: 60000, 30000 and 10000 by
	// default. They must not increase with worse health.
	HealthyIntervalMs  int `json:"healthyIntervalMs,omitempty"`
	DegradedIntervalMs int `json:"degradedIntervalMs,omitempty"`
	CriticalIntervalMs int `json:"criticalIntervalMs,omitempty"`
	// DeadPeerTimeoutMs ends a session whose peer has sent nothing for this
	// long: 180000 by default. It must be at least twice the healthy (and
	// the degraded) interval, so one lost keepalive never ends a session.
	DeadPeerTimeoutMs int `json:"deadPeerTimeoutMs,omitempty"`
}

// telemetryConfig is k as the estimator's config; the zero KeepaliveConfig
// gives the zero telemetry.Config, whose defaults are the package's.
func (k KeepaliveConfig) telemetryConfig() telemetry.Config {
	ms := func(v int) time.Duration { return time.Duration(v) * time.Millisecond }
	return telemetry.Config{
		HealthyInterval:  ms(k.HealthyIntervalMs),
		DegradedInterval: ms(k.DegradedIntervalMs),
		CriticalInterval: ms(k.CriticalIntervalMs),
		DeadAfter:        ms(k.DeadPeerTimeoutMs),
	}
}

// check validates k as the field named field ("keepalive").
func (k KeepaliveConfig) check(field string) error {
	for _, f := range []struct {
		name string
		v    int
	}{
		{"healthyIntervalMs", k.HealthyIntervalMs},
		{"degradedIntervalMs", k.DegradedIntervalMs},
		{"criticalIntervalMs", k.CriticalIntervalMs},
		{"deadPeerTimeoutMs", k.DeadPeerTimeoutMs},
	} {
		if f.v < 0 {
			return configErr(field+"."+f.name, strconv.Itoa(f.v), "must not be negative")
		}
	}
	err := k.telemetryConfig().Validate()
	var ce *telemetry.ConfigError
	if errors.As(err, &ce) {
		names := map[string]string{
			"healthyInterval":  "healthyIntervalMs",
			"degradedInterval": "degradedIntervalMs",
			"criticalInterval": "criticalIntervalMs",
			"unknownInterval":  "degradedIntervalMs",
			"deadAfter":        "deadPeerTimeoutMs",
		}
		name, ok := names[ce.Field]
		if !ok {
			name = ce.Field
		}
		return configErr(field+"."+name, ce.Value, ce.Reason)
	}
	return err
}
