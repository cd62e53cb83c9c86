package main

import "testing"

// TestQuickstart runs the README's first command in-process: it must finish
// without error.
func TestQuickstart(t *testing.T) {
	if err := run(); err != nil {
		t.Fatal(err)
	}
}
