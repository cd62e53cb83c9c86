package telemetry

import (
	"fmt"
	"strconv"
	"time"
)

// Defaults of [Config] and [Thresholds]; the package doc says why.
const (
	DefaultHealthyInterval         = 60 * time.Second
	DefaultDegradedInterval        = 30 * time.Second
	DefaultCriticalInterval        = 10 * time.Second
	DefaultDeadAfter               = 180 * time.Second
	DefaultLossWindow              = 32
	DefaultDegradedLoss            = 0.05
	DefaultCriticalLoss            = 0.20
	DefaultDegradedRTT             = 300 * time.Millisecond
	DefaultCriticalRTT             = time.Second
	DefaultCriticalConsecutiveLoss = 3
	DefaultRecoverLossFactor       = 0.5
	DefaultRecoverRTTFactor        = 0.8
	DefaultRecoverAcks             = 3

	// MaxLossWindow bounds LossWindow, and with it an estimator's memory.
	MaxLossWindow = 1024
)

// Config tunes an [Estimator]. The zero value is the default everywhere.
type Config struct {
	// Clock tells the time. If nil, the system clock.
	Clock Clock

	// HealthyInterval, DegradedInterval and CriticalInterval are the keepalive
	// intervals for each link health. If zero, 60 s, 30 s and 10 s. They must
	// not increase with worse health.
	HealthyInterval  time.Duration
	DegradedInterval time.Duration
	CriticalInterval time.Duration
	// UnknownInterval is the keepalive interval before health is known. If
	// zero, DegradedInterval.
	UnknownInterval time.Duration

	// DeadAfter is how long the peer may stay silent before it is declared
	// dead. If zero, 180 s. It must be at least twice HealthyInterval, so that
	// one lost keepalive never kills a session.
	DeadAfter time.Duration

	// LossWindow is how many of the most recent keepalives the loss ratio is
	// taken over. If zero, 32; at most MaxLossWindow.
	LossWindow int

	// Thresholds decide link health.
	Thresholds Thresholds
}

// Thresholds decide link health; see the package doc. Zero fields take the
// defaults.
type Thresholds struct {
	// DegradedLoss and CriticalLoss are loss ratios (0 to 1) from which the
	// link is degraded or critical. If zero, 0.05 and 0.20.
	DegradedLoss float64
	CriticalLoss float64
	// DegradedRTT and CriticalRTT are smoothed RTTs from which the link is
	// degraded or critical. If zero, 300 ms and 1 s.
	DegradedRTT time.Duration
	CriticalRTT time.Duration
	// CriticalConsecutiveLoss is how many keepalives lost in a row make the
	// link critical whatever the ratio. If zero, 3.
	CriticalConsecutiveLoss int
	// RecoverLossFactor and RecoverRTTFactor scale a level's thresholds to
	// the values loss and SRTT must be under to leave that level. If zero,
	// 0.5 and 0.8. Both lie in (0, 1].
	RecoverLossFactor float64
	RecoverRTTFactor  float64
	// RecoverAcks is for how many consecutive acknowledged keepalives those
	// values must hold before health improves. If zero, 3.
	RecoverAcks int
}

// ConfigError is returned by [Config.Validate]: Field is the field's JSON path
// inside Config ("thresholds.degradedLoss"), Value the offending value, Reason
// why. The root package turns it into its own ConfigError under its path.
type ConfigError struct {
	Field  string
	Value  string
	Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("telemetry: invalid %s %q: %s", e.Field, e.Value, e.Reason)
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.Clock == nil {
		c.Clock = SystemClock()
	}
	setDur(&c.HealthyInterval, DefaultHealthyInterval)
	setDur(&c.DegradedInterval, DefaultDegradedInterval)
	setDur(&c.CriticalInterval, DefaultCriticalInterval)
	setDur(&c.UnknownInterval, c.DegradedInterval)
	setDur(&c.DeadAfter, DefaultDeadAfter)
	if c.LossWindow == 0 {
		c.LossWindow = DefaultLossWindow
	}
	t := &c.Thresholds
	setFloat(&t.DegradedLoss, DefaultDegradedLoss)
	setFloat(&t.CriticalLoss, DefaultCriticalLoss)
	setDur(&t.DegradedRTT, DefaultDegradedRTT)
	setDur(&t.CriticalRTT, DefaultCriticalRTT)
	if t.CriticalConsecutiveLoss == 0 {
		t.CriticalConsecutiveLoss = DefaultCriticalConsecutiveLoss
	}
	setFloat(&t.RecoverLossFactor, DefaultRecoverLossFactor)
	setFloat(&t.RecoverRTTFactor, DefaultRecoverRTTFactor)
	if t.RecoverAcks == 0 {
		t.RecoverAcks = DefaultRecoverAcks
	}
	return c
}

func setDur(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

func setFloat(f *float64, def float64) {
	if *f == 0 {
		*f = def
	}
}

// Validate reports the first field of c, defaults applied, that is out of
// range, as a *ConfigError.
func (c Config) Validate() error {
	c = c.withDefaults()
	t := c.Thresholds
	durs := []struct {
		field string
		v     time.Duration
	}{
		{"healthyInterval", c.HealthyInterval},
		{"degradedInterval", c.DegradedInterval},
		{"criticalInterval", c.CriticalInterval},
		{"unknownInterval", c.UnknownInterval},
		{"deadAfter", c.DeadAfter},
		{"thresholds.degradedRtt", t.DegradedRTT},
		{"thresholds.criticalRtt", t.CriticalRTT},
	}
	for _, d := range durs {
		if d.v < 0 {
			return &ConfigError{d.field, d.v.String(), "must not be negative"}
		}
	}
	switch {
	case c.DegradedInterval > c.HealthyInterval:
		return &ConfigError{"degradedInterval", c.DegradedInterval.String(), "must not exceed healthyInterval " + c.HealthyInterval.String()}
	case c.CriticalInterval > c.DegradedInterval:
		return &ConfigError{"criticalInterval", c.CriticalInterval.String(), "must not exceed degradedInterval " + c.DegradedInterval.String()}
	case c.DeadAfter < 2*c.HealthyInterval || c.DeadAfter < 2*c.UnknownInterval:
		return &ConfigError{"deadAfter", c.DeadAfter.String(), "must be at least twice healthyInterval and unknownInterval"}
	case c.LossWindow < 1 || c.LossWindow > MaxLossWindow:
		return &ConfigError{"lossWindow", strconv.Itoa(c.LossWindow), fmt.Sprintf("must lie in [1, %d]", MaxLossWindow)}
	case !(t.DegradedLoss > 0 && t.DegradedLoss <= 1):
		return &ConfigError{"thresholds.degradedLoss", ftoa(t.DegradedLoss), "must lie in (0, 1]"}
	case !(t.CriticalLoss > 0 && t.CriticalLoss <= 1) || t.CriticalLoss < t.DegradedLoss:
		return &ConfigError{"thresholds.criticalLoss", ftoa(t.CriticalLoss), "must lie in [degradedLoss, 1]"}
	case t.CriticalRTT < t.DegradedRTT:
		return &ConfigError{"thresholds.criticalRtt", t.CriticalRTT.String(), "must not be below degradedRtt " + t.DegradedRTT.String()}
	case t.CriticalConsecutiveLoss < 1 || t.CriticalConsecutiveLoss > c.LossWindow:
		return &ConfigError{"thresholds.criticalConsecutiveLoss", strconv.Itoa(t.CriticalConsecutiveLoss), "must lie in [1, lossWindow]"}
	case !(t.RecoverLossFactor > 0 && t.RecoverLossFactor <= 1):
		return &ConfigError{"thresholds.recoverLossFactor", ftoa(t.RecoverLossFactor), "must lie in (0, 1]"}
	case !(t.RecoverRTTFactor > 0 && t.RecoverRTTFactor <= 1):
		return &ConfigError{"thresholds.recoverRttFactor", ftoa(t.RecoverRTTFactor), "must lie in (0, 1]"}
	case t.RecoverAcks < 1:
		return &ConfigError{"thresholds.recoverAcks", strconv.Itoa(t.RecoverAcks), "must be at least 1"}
	}
	return nil
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
