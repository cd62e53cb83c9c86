// Command warren-bench runs Warren's benchmark suite (package bench) and
// prints each figure beside its baseline, measured in the same run, with
// their ratio; -json writes the same as JSON.
//
//	go run ./bench/cmd/warren-bench [-run regexp] [-benchtime 1s] [-short] [-rounds n] [-json file]
//
// With -rounds n it runs the whole selection n times, one round after
// another, and judges each row by the median of its n ratios, each taken
// within one round: a machine's speed drifts by tens of percent from one
// minute to the next (frequency scaling, neighbours on a shared host), so
// one round's ratio of two cases measured a minute apart can be far from
// the truth, and the median of several is not. Rounds after the first run
// the cases in an order shuffled for the round. The table then shows the
// range of the ratios too.
//
// Set WARREN_BENCH_IDLE_MAX=10000 to add the 10,000 idle client cases.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"runtime"
	"slices"
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
	// Round is the round (from 1) the figure was measured in.
	Round int `json:"round"`
}

// Row is one comparison of the table. With several rounds, Value and
// BaseVal are the medians of the rounds' values and Ratio the median of the
// rounds' ratios, each taken within its round; Ratios lists those.
type Row struct {
	Figure   string    `json:"figure"`
	Value    float64   `json:"value"`
	Metric   string    `json:"metric"`
	Baseline string    `json:"baseline"`
	BaseVal  float64   `json:"baselineValue"`
	Ratio    float64   `json:"ratio"`
	Ratios   []float64 `json:"ratios,omitempty"`
	Goal     float64   `json:"goal,omitempty"`
	Note     string    `json:"note,omitempty"`
}

// options are the command's flags.
type options struct {
	run, benchtime, jsonOut *string
	short                   *bool
	rounds                  *int
}

// defineFlags defines the command's flags on fs.
func defineFlags(fs *flag.FlagSet) options {
	return options{
		run:       fs.String("run", "", "run only the cases whose name matches this regexp"),
		benchtime: fs.String("benchtime", "1s", "time (or Nx) per case, as go test -benchtime"),
		short:     fs.Bool("short", false, "reduced scale, as go test -short"),
		jsonOut:   fs.String("json", "", "write the figures and the table to this file as JSON"),
		rounds:    fs.Int("rounds", 1, "run the selection this many times and judge each row by its median ratio"),
	}
}

func main() {
	bench.RunSwarmIfChild()
	testing.Init()
	opts := defineFlags(flag.CommandLine)
	run, benchtime, short, jsonOut, rounds := opts.run, opts.benchtime, opts.short, opts.jsonOut, opts.rounds
	flag.Parse()
	flag.Set("test.benchtime", *benchtime)
	if *short {
		flag.Set("test.short", "true")
	}
	var re *regexp.Regexp
	if *run != "" {
		re = regexp.MustCompile(*run)
	}

	if *rounds < 1 {
		fmt.Fprintf(os.Stderr, "warren-bench: -rounds %d: want at least 1\n", *rounds)
		os.Exit(2)
	}

	// figures[r] holds round r's figures by name.
	figures := make([]map[string]Figure, *rounds)
	var order []Figure
	var cases []bench.Case
	for _, c := range bench.Cases() {
		if re == nil || re.MatchString(c.Name) {
			cases = append(cases, c)
		}
	}
	for r := range figures {
		figures[r] = map[string]Figure{}
		for _, c := range roundOrder(cases, r) {
			start := time.Now()
			res := testing.Benchmark(c.Run)
			f := Figure{Name: c.Name, Metric: c.Metric, N: res.N, NsPerOp: res.NsPerOp(), AllocsOp: res.AllocsPerOp(), BytesOp: res.AllocedBytesPerOp(), Extra: res.Extra, Round: r + 1}
			v, ok := bench.Value(res, c.Metric)
			f.Value, f.Failed = v, !ok || res.N == 0
			figures[r][c.Name] = f
			order = append(order, f)
			round := ""
			if *rounds > 1 {
				round = fmt.Sprintf("[%d/%d] ", r+1, *rounds)
			}
			fmt.Fprintf(os.Stderr, "%s%-45s %12.4g %-13s %6d allocs/op  (%v)\n", round, c.Name, f.Value, c.Metric, f.AllocsOp, time.Since(start).Round(time.Millisecond))
		}
	}
	rows := table(bench.Comparisons(), figures)

	fmt.Printf("Warren benchmark suite, %s/%s, %d CPUs, %s, benchtime %s, %d round(s)\n\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), *benchtime, *rounds)
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
		ratio := fmt.Sprintf("%.2f×", r.Ratio)
		if len(r.Ratios) > 1 {
			ratio += fmt.Sprintf(" (%.2f–%.2f)", r.Ratios[0], r.Ratios[len(r.Ratios)-1])
		}
		fmt.Fprintf(tw, "%s\t%s %s\t%s\t%s\t%s\t%s\t%s\n", r.Figure, num(r.Value), r.Metric, r.Baseline, num(r.BaseVal), ratio, goal, r.Note)
	}
	tw.Flush()

	if *jsonOut != "" {
		out, err := json.MarshalIndent(struct {
			GOOS, GOARCH, Go string
			CPUs             int
			Benchtime        string
			Rounds           int
			Figures          []Figure
			Table            []Row
		}{runtime.GOOS, runtime.GOARCH, runtime.Version(), runtime.NumCPU(), *benchtime, *rounds, order, rows}, "", "  ")
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

// roundOrder returns the order round r (from 0) runs the cases in: the
// suite's order first, then a shuffle of its own for each later round (the
// same in every run), so that a figure and its baseline are not measured
// the same time apart, in the same order, in every round.
func roundOrder(cases []bench.Case, r int) []bench.Case {
	if r == 0 {
		return cases
	}
	order := slices.Clone(cases)
	rand.New(rand.NewPCG(uint64(r), 0x77617272656e)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	return order
}

// table judges each comparison over the rounds in which both its figure
// and its baseline were measured: the ratio of each round, and their
// median; the values shown are the medians of the rounds' values. A
// comparison with no such round is left out.
func table(cmps []bench.Comparison, rounds []map[string]Figure) []Row {
	var rows []Row
	for _, cmp := range cmps {
		var vals, bases, ratios []float64
		var metric string
		for _, figures := range rounds {
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
			base *= cmp.Factor
			var ratio float64
			switch {
			case cmp.Lower && f.Value > 0:
				ratio = base / f.Value
			case !cmp.Lower && base > 0:
				ratio = f.Value / base
			}
			metric = f.Metric
			vals, bases, ratios = append(vals, f.Value), append(bases, base), append(ratios, ratio)
		}
		if len(ratios) == 0 {
			continue
		}
		slices.Sort(ratios)
		row := Row{Figure: cmp.Figure, Value: median(vals), Metric: metric, Baseline: cmp.Baseline, BaseVal: median(bases),
			Ratio: median(ratios), Goal: cmp.Goal, Note: cmp.Note}
		if len(ratios) > 1 {
			row.Ratios = ratios
		}
		rows = append(rows, row)
	}
	return rows
}

// median returns the median of vs (the mean of the middle two for an even
// count), leaving vs as it was.
func median(vs []float64) float64 {
	s := slices.Sorted(slices.Values(vs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
