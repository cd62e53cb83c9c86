package telemetry

import (
	"fmt"
	"time"
)

// Health is a link's health. The zero value is HealthUnknown.
type Health uint8

// Link health, from no evidence to the worst.
const (
	// HealthUnknown: no keepalive settled yet, or no keepalives at all
	// (a WireGuard peer). Never guessed.
	HealthUnknown Health = iota
	HealthHealthy
	HealthDegraded
	HealthCritical
)

var healthNames = [...]string{"unknown", "healthy", "degraded", "critical"}

// String returns "unknown", "healthy", "degraded" or "critical".
func (h Health) String() string {
	if int(h) < len(healthNames) {
		return healthNames[h]
	}
	return fmt.Sprintf("Health(%d)", uint8(h))
}

// MarshalText encodes h as its String.
func (h Health) MarshalText() ([]byte, error) {
	if int(h) >= len(healthNames) {
		return nil, fmt.Errorf("telemetry: invalid health %d", uint8(h))
	}
	return []byte(healthNames[h]), nil
}

// UnmarshalText decodes the String of a Health.
func (h *Health) UnmarshalText(b []byte) error {
	for i, n := range healthNames {
		if string(b) == n {
			*h = Health(i)
			return nil
		}
	}
	return fmt.Errorf("telemetry: unknown health %q", b)
}

// Quality is a snapshot of one session's link quality. Its zero value is the
// explicit unknown state: nothing measured, nothing invented. JSON encodes
// durations in nanoseconds, as the field names say.
type Quality struct {
	// Health is the link health; HealthUnknown until a keepalive settled.
	Health Health `json:"health"`
	// RTT holds the round-trip statistics; zero (omitted) when RTT.Samples is
	// zero, as on the hub side of a session and for WireGuard peers.
	RTT RTTStats `json:"rtt,omitzero"`
	// Loss holds the keepalive loss; zero (omitted) when no keepalive settled.
	Loss LossStats `json:"loss,omitzero"`
	// KeepaliveInterval is the interval that health asks for; zero when the
	// session has no Warren keepalives.
	KeepaliveInterval time.Duration `json:"keepaliveIntervalNs,omitzero"`
	// LastHeard is when the peer was last heard from; zero if never.
	LastHeard time.Time `json:"lastHeard,omitzero"`
	// Dead reports that the peer was declared dead.
	Dead bool `json:"dead,omitempty"`
}

// RTTStats are round-trip statistics of acknowledged keepalives.
type RTTStats struct {
	// Samples is how many RTT samples were taken; the other fields are zero
	// and meaningless when it is.
	Samples uint64 `json:"samples"`
	// Smoothed is SRTT and Variance RTTVAR of RFC 6298.
	Smoothed time.Duration `json:"smoothedNs"`
	Variance time.Duration `json:"varianceNs"`
	// Jitter is the RFC 3550 interarrival jitter of the RTT samples.
	Jitter time.Duration `json:"jitterNs"`
	Min    time.Duration `json:"minNs"`
	Max    time.Duration `json:"maxNs"`
	Last   time.Duration `json:"lastNs"`
}

// LossStats is the keepalive loss over the estimator's window.
type LossStats struct {
	// Settled is how many keepalives of the window have a known fate, Lost
	// how many of them were lost, Ratio Lost/Settled.
	Settled int     `json:"settled"`
	Lost    int     `json:"lost"`
	Ratio   float64 `json:"ratio"`
}
