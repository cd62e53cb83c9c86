package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/warrenvpn/warren/bench"
)

// TestTableJudgesEachRowByItsMedianRatio: each round's ratio is taken within
// the round, the row shows their median; a drift of the machine's speed
// between rounds, which moves a figure and its baseline together, does not
// move the ratio the row shows.
func TestTableJudgesEachRowByItsMedianRatio(t *testing.T) {
	fig := func(name string, v float64) Figure { return Figure{Name: name, Metric: "MB/s", Value: v} }
	rounds := []map[string]Figure{
		// The machine runs at full speed, then at half, then a case
		// meets a bad moment of its own.
		{"A": fig("A", 200), "base": fig("base", 100)},
		{"A": fig("A", 100), "base": fig("base", 50)},
		{"A": fig("A", 60), "base": fig("base", 100)},
	}
	cmps := []bench.Comparison{
		{Figure: "A", Baseline: "base", Factor: 1, Goal: 1},
		{Figure: "A", Baseline: "missing", Factor: 1},
		{Figure: "heap", Baseline: "64 KiB", Fixed: 64, Factor: 1, Lower: true},
	}
	rows := table(cmps, rounds)
	if len(rows) != 1 {
		t.Fatalf("got %d rows, want 1 (a comparison without its baseline or figure is left out): %+v", len(rows), rows)
	}
	r := rows[0]
	if r.Ratio != 2 || !slices.Equal(r.Ratios, []float64{0.6, 2, 2}) {
		t.Errorf("ratio %v of %v, want the median 2 of [0.6 2 2]", r.Ratio, r.Ratios)
	}
	if r.Value != 100 || r.BaseVal != 100 || r.Goal != 1 || r.Metric != "MB/s" {
		t.Errorf("row %+v: want the medians of the values (100, 100), goal 1, MB/s", r)
	}

	// A fixed baseline, smaller is better, in one round: no range.
	rows = table(cmps[2:], []map[string]Figure{{"heap": {Name: "heap", Metric: "KiB/session", Value: 16}}})
	if len(rows) != 1 || rows[0].Ratio != 4 || rows[0].Ratios != nil {
		t.Errorf("fixed baseline: %+v, want ratio 64/16 = 4 and no range", rows)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		in := slices.Clone(c.in)
		if got := median(in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
		if !slices.Equal(in, c.in) {
			t.Errorf("median reordered its input: %v", in)
		}
	}
}

// TestREADMECommandsParse: every warren-bench command in the README's
// Performance section uses only flags the command has, with values they
// take.
func TestREADMECommandsParse(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, perf, ok := strings.Cut(string(readme), "\n## Performance\n")
	if !ok {
		t.Fatal("README.md has no ## Performance section")
	}
	perf, _, _ = strings.Cut(perf, "\n## ")
	const cmd = "go run ./bench/cmd/warren-bench"
	n := 0
	for line := range strings.Lines(perf) {
		_, args, ok := strings.Cut(line, cmd)
		if !ok {
			continue
		}
		args, _, _ = strings.Cut(args, "#")
		args, _, _ = strings.Cut(args, "`")
		n++
		fs := flag.NewFlagSet("warren-bench", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		defineFlags(fs)
		if err := fs.Parse(strings.Fields(args)); err != nil {
			t.Errorf("README: %s%s: %v", cmd, args, err)
		} else if fs.NArg() != 0 {
			t.Errorf("README: %s%s: stray arguments %q", cmd, args, fs.Args())
		}
	}
	if n == 0 {
		t.Errorf("README's Performance section has no %q command", cmd)
	}
}

// TestRoundOrder: the first round runs the suite's order, later rounds a
// shuffle of the same cases, the same in every run.
func TestRoundOrder(t *testing.T) {
	cases := bench.Cases()
	names := func(cs []bench.Case) []string {
		var n []string
		for _, c := range cs {
			n = append(n, c.Name)
		}
		return n
	}
	if !slices.Equal(names(roundOrder(cases, 0)), names(cases)) {
		t.Error("round 1 does not run the suite's order")
	}
	r2, r3 := names(roundOrder(cases, 1)), names(roundOrder(cases, 2))
	if slices.Equal(r2, names(cases)) || slices.Equal(r2, r3) {
		t.Error("later rounds are not shuffled, each its own way")
	}
	if !slices.Equal(r2, names(roundOrder(cases, 1))) {
		t.Error("a round's order differs between runs")
	}
	if !slices.Equal(slices.Sorted(slices.Values(r2)), slices.Sorted(slices.Values(names(cases)))) {
		t.Error("a shuffled round does not run every case once")
	}
}
