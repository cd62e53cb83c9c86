//go:build race

package session

// raceEnabled: the race detector is on, and sync.Pool drops what is put
// back at random, so allocations are not counted.
const raceEnabled = true
