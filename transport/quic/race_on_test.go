//go:build race

package quic

// raceEnabled: the race detector is on and allocates, so allocations are
// not counted.
const raceEnabled = true
