//go:build !race

package session

// raceEnabled: the race detector is off, so allocations are counted.
const raceEnabled = false
