package telemetry

import "time"

// Clock tells the time. An [Estimator] reads every instant from its Clock, so a
// test can drive it with a manual one (telemetry/telemetrytest.Clock).
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// SystemClock returns the clock of the system, time.Now.
func SystemClock() Clock { return systemClock{} }
