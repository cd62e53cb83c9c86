//go:build race

package testing_test

const raceEnabled = true
