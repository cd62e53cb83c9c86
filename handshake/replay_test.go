package handshake

import "testing"

// TestReplayWindow follows wireguard-go's replay_test, itself ported from the
// Linux kernel's, with this package's window and limit.
func TestReplayWindow(t *testing.T) {
	const (
		tLim  = windowSize + 1
		limit = MaxMessages
	)
	var w ReplayWindow
	steps := []struct {
		n    uint64
		want bool
	}{
		{0, true},                    // 1
		{1, true},                    // 2
		{1, false},                   // 3
		{9, true},                    // 4
		{8, true},                    // 5
		{7, true},                    // 6
		{7, false},                   // 7
		{tLim, true},                 // 8
		{tLim - 1, true},             // 9
		{tLim - 1, false},            // 10
		{tLim - 2, true},             // 11
		{2, true},                    // 12
		{2, false},                   // 13
		{tLim + 16, true},            // 14
		{3, false},                   // 15
		{tLim + 16, false},           // 16
		{tLim * 4, true},             // 17
		{tLim*4 - (tLim - 1), true},  // 18
		{10, false},                  // 19
		{tLim*4 - tLim, false},       // 20
		{tLim*4 - (tLim + 1), false}, // 21
		{tLim*4 - (tLim - 2), true},  // 22
		{tLim*4 + 1 - tLim, false},   // 23
		{0, false},                   // 24
		{limit, false},               // 25
		{limit - 1, true},            // 26
		{limit, false},               // 27
		{limit - 1, false},           // 28
		{limit - 2, true},            // 29
		{limit + 1, false},           // 30
		{limit + 2, false},           // 31
		{limit - 2, false},           // 32
		{limit - 3, true},            // 33
		{0, false},                   // 34
		{^uint64(0), false},          // 35
	}
	for i, s := range steps {
		if got := w.Accept(s.n); got != s.want {
			t.Fatalf("step %d: Accept(%d) = %v, want %v", i+1, s.n, got, s.want)
		}
	}
}

func TestReplayWindowBulk(t *testing.T) {
	tests := []struct {
		name string
		run  func(accept func(uint64, bool))
	}{
		{"ascending from 1, then 0", func(a func(uint64, bool)) {
			for i := uint64(1); i <= windowSize; i++ {
				a(i, true)
			}
			a(0, true)
			a(0, false)
		}},
		{"ascending from 2, then 1 in, 0 out", func(a func(uint64, bool)) {
			for i := uint64(2); i <= windowSize+1; i++ {
				a(i, true)
			}
			a(1, true)
			a(0, false)
		}},
		{"descending to 1", func(a func(uint64, bool)) {
			for i := uint64(windowSize + 1); i > 0; i-- {
				a(i, true)
			}
		}},
		{"descending to 2, then 0 out", func(a func(uint64, bool)) {
			for i := uint64(windowSize + 2); i > 1; i-- {
				a(i, true)
			}
			a(0, false)
		}},
		{"descending, then one ahead pushes 0 out", func(a func(uint64, bool)) {
			for i := uint64(windowSize); i > 0; i-- {
				a(i, true)
			}
			a(windowSize+1, true)
			a(0, false)
		}},
		{"descending, 0, then one ahead", func(a func(uint64, bool)) {
			for i := uint64(windowSize); i > 0; i-- {
				a(i, true)
			}
			a(0, true)
			a(windowSize+1, true)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w ReplayWindow
			w.Accept(12345) // Reset must forget this
			w.Reset()
			tt.run(func(n uint64, want bool) {
				t.Helper()
				if got := w.Accept(n); got != want {
					t.Fatalf("Accept(%d) = %v, want %v", n, got, want)
				}
			})
		})
	}
}

func TestReplayWindowCoversAtLeast2048(t *testing.T) {
	if windowSize < 2048 {
		t.Fatalf("window of %d counters, DESIGN §3 asks for at least 2048", windowSize)
	}
	var w ReplayWindow
	w.Accept(windowSize)
	if !w.Accept(0) {
		t.Fatalf("counter 0 refused %d behind the newest", windowSize)
	}
	w.Accept(windowSize + 1 + 64) // slides the block holding 0 and 1 out
	if w.Accept(1) {
		t.Fatal("counter far behind the window accepted")
	}
}
