// Command warren-bench runs Warren's benchmark suite (package bench) and
// prints each figure beside its baseline, measured in the same run, with
// their ratio; -json writes the same as JSON.
//
//	go run ./bench/cmd/warren-bench [-run regexp] [-benchtime 1s] [-short] [-json file]
//
// Set WARREN_BENCH_IDLE_MAX=10000 to add the 10,000 idle client cases.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/warrenvpn/warren/bench"
)

// Figure is one case's measurement.
type Figure struct {
	Name     string             `json:"name"`
	Metric   string             `json:"metric"`
	Value    float64            `json:"value"`
	N        int                `json:"n"`
	NsPerOp  int64              `json:"nsPerOp"`
	AllocsOp int64              `json:"allocsPerOp"`
	BytesOp  int64              `json:"bytesPerOp"`
	Extra    map[string]float64 `json:"extra,omitempty"`
	Failed   bool               `json:"failed,omitempty"`
}

// Row is one comparison of the table.
type Row struct {
	Figure   string  `json:"figure"`
	Value    float64 `json:"value"`
	Metric   string  `json:"metric"`
	Baseline string  `json:"baseline"`
	BaseVal  float64 `json:"baselineValue"`
	Ratio    float64 `json:"ratio"`
	Goal     float64 `json:"goal,omitempty"`
	Note     string  `json:"note,omitempty"`
}

func main() {
	bench.RunSwarmIfChild()
	testing.Init()
	run := flag.String("run", "", "run only the cases whose name matches this regexp")
	benchtime := flag.String("benchtime", "1s", "time (or Nx) per case, as go test -benchtime")
	short := flag.Bool("short", false, "reduced scale, as go test -short")
	jsonOut := flag.String("json", "", "write the figures and the table to this file as JSON")
	flag.Parse()
	flag.Set("test.benchtime", *benchtime)
	if *short {
		flag.Set("test.short", "true")
	}
	var re *regexp.Regexp
	if *run != "" {
		re = regexp.MustCompile(*run)
	}

	figures := map[string]Figure{}
	var order []Figure
	for _, c := range bench.Cases() {
		if re != nil && !re.MatchString(c.Name) {
			continue
		}
		start := time.Now()
		r := testing.Benchmark(c.Run)
		f := Figure{Name: c.Name, Metric: c.Metric, N: r.N, NsPerOp: r.NsPerOp(), AllocsOp: r.AllocsPerOp(), BytesOp: r.AllocedBytesPerOp(), Extra: r.Extra}
		v, ok := bench.Value(r, c.Metric)
		f.Value, f.Failed = v, !ok || r.N == 0
		figures[c.Name] = f
		order = append(order, f)
		fmt.Fprintf(os.Stderr, "%-45s %12.4g %-13s %6d allocs/op  (%v)\n", c.Name, f.Value, c.Metric, f.AllocsOp, time.Since(start).Round(time.Millisecond))
	}

	var rows []Row
	for _, cmp := range bench.Comparisons() {
		f, ok := figures[cmp.Figure]
		if !ok {
			continue
		}
		base := cmp.Fixed
		if base == 0 {
			bf, ok := figures[cmp.Baseline]
			if !ok {
				continue
			}
			base = bf.Value
		}
		row := Row{Figure: cmp.Figure, Value: f.Value, Metric: f.Metric, Baseline: cmp.Baseline, BaseVal: base * cmp.Factor, Goal: cmp.Goal, Note: cmp.Note}
		switch {
		case cmp.Lower && f.Value > 0:
			row.Ratio = row.BaseVal / f.Value
		case !cmp.Lower && row.BaseVal > 0:
			row.Ratio = f.Value / row.BaseVal
		}
		rows = append(rows, row)
	}

	fmt.Printf("Warren benchmark suite, %s/%s, %d CPUs, %s, benchtime %s\n\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), *benchtime)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tvalue\tbaseline\tvalue\tratio\tgoal\tnote")
	for _, r := range rows {
		goal := ""
		if r.Goal > 0 {
			mark := "met"
			if r.Ratio < r.Goal {
				mark = "missed"
			}
			goal = fmt.Sprintf("≥%.2g× %s", r.Goal, mark)
		}
		fmt.Fprintf(tw, "%s\t%s %s\t%s\t%s\t%.2f×\t%s\t%s\n", r.Figure, num(r.Value), r.Metric, r.Baseline, num(r.BaseVal), r.Ratio, goal, r.Note)
	}
	tw.Flush()

	if *jsonOut != "" {
		out, err := json.MarshalIndent(struct {
			GOOS, GOARCH, Go string
			CPUs             int
			Benchtime        string
			Figures          []Figure
			Table            []Row
		}{runtime.GOOS, runtime.GOARCH, runtime.Version(), runtime.NumCPU(), *benchtime, order, rows}, "", "  ")
		if err == nil {
			err = os.WriteFile(*jsonOut, append(out, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "warren-bench:", err)
			os.Exit(1)
		}
	}
	for _, f := range order {
		if f.Failed {
			fmt.Fprintln(os.Stderr, "warren-bench: failed:", f.Name)
			defer os.Exit(1)
		}
	}
}

// num formats a figure with three significant digits, no exponent.
func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
