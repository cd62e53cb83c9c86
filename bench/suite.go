package bench

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// A Case is one benchmark of the suite.
type Case struct {
	// Name is the case's path under its group, e.g.
	// "Packets/client-hub/websocket/1400"; go test shows it as
	// BenchmarkPackets/client-hub/websocket/1400.
	Name string
	// Metric is the figure the table shows for this case: "MB/s" (from
	// SetBytes), or a metric the case reports with ReportMetric.
	Metric string
	// Run is the benchmark.
	Run func(b *testing.B)
}

// A Comparison relates a figure to its baseline: Ratio is
// Figure's value / (Baseline's value × Factor). Goal is the ratio the
// project aims for, 0 if none.
type Comparison struct {
	Figure, Baseline string
	Factor           float64
	Goal             float64
	// Fixed, when not zero, is the baseline's value: Baseline then only
	// names it (a goal rather than a measurement).
	Fixed float64
	// Lower means a smaller figure is better (heap per session); the ratio
	// is then Baseline × Factor / Figure.
	Lower bool
	Note  string
}

// Transports are the transports each per-transport case runs over.
var Transports = []string{"websocket", "quic", "wireguard"}

// Sizes are the IP packet sizes of the packet cases.
var Sizes = []int{1400, 64}

// ScaleClients are the client counts of the Scale cases.
var ScaleClients = []int{1, 10, 100}

// IdleClients are the idle client counts of the IdleHeap cases. 10,000 is
// opt in: set WARREN_BENCH_IDLE_MAX=10000.
func IdleClients() []int {
	n := []int{1000}
	if max, _ := strconv.Atoi(os.Getenv("WARREN_BENCH_IDLE_MAX")); max >= 10000 {
		n = append(n, 10000)
	}
	return n
}

// Cases returns every case of the suite, in the order the table lists them.
func Cases() []Case {
	var cs []Case
	add := func(name, metric string, run func(*testing.B)) {
		cs = append(cs, Case{Name: name, Metric: metric, Run: run})
	}
	for _, tr := range Transports {
		add("SessionThroughput/"+tr, "MB/s", func(b *testing.B) { benchSessionThroughput(b, tr) })
	}
	for _, path := range []string{"client-hub", "client-hub-client"} {
		for _, tr := range Transports {
			for _, size := range Sizes {
				add("Packets/"+path+"/"+tr+"/"+strconv.Itoa(size), "MB/s", func(b *testing.B) {
					benchPackets(b, tr, path == "client-hub-client", size)
				})
			}
		}
	}
	for _, size := range Sizes {
		add("Baseline/wggo-pair/"+strconv.Itoa(size), "MB/s", func(b *testing.B) { benchWGGoPair(b, size) })
	}
	for _, size := range Sizes {
		add("Baseline/chacha20poly1305/"+strconv.Itoa(size), "MB/s", func(b *testing.B) { benchChaCha(b, size) })
	}
	add("Baseline/noise-seal-open/1400", "MB/s", func(b *testing.B) { benchNoiseSealOpen(b, 1400) })
	for _, size := range Sizes {
		add("Baseline/tls13/"+strconv.Itoa(size), "MB/s", func(b *testing.B) { benchTLS(b, size) })
	}
	add("Baseline/loopback-tcp", "MB/s", benchLoopbackTCP)
	for _, to := range []string{"dial-listen", "dial-nat"} {
		for _, tr := range Transports {
			add("TCP/"+to+"/"+tr, "MB/s", func(b *testing.B) { benchTCP(b, tr, to == "dial-nat") })
		}
	}
	add("TCP/wggo-netstack-pair", "MB/s", benchWGGoNetstackPair)
	for _, tr := range Transports {
		for _, n := range ScaleClients {
			add("Scale/"+tr+"/clients="+strconv.Itoa(n), "MB/s", func(b *testing.B) { benchScale(b, tr, n, scaleWindow(n)) })
		}
		// One client with the window each of the most clients has: what
		// the smaller window costs, apart from the number of clients.
		n := ScaleClients[len(ScaleClients)-1]
		add("Scale/"+tr+"/clients=1,window="+strconv.Itoa(scaleWindow(n)), "MB/s", func(b *testing.B) { benchScale(b, tr, 1, scaleWindow(n)) })
	}
	add("Handshake/x25519", "ops/s", benchX25519)
	add("Handshake/responder", "handshakes/s", benchResponder)
	for _, tr := range Transports {
		add("Handshake/connect/"+tr, "handshakes/s", func(b *testing.B) { benchConnect(b, tr) })
	}
	for _, tr := range Transports {
		for _, n := range IdleClients() {
			add("IdleHeap/"+tr+"/clients="+strconv.Itoa(n), "KiB/session", func(b *testing.B) { benchIdleHeap(b, tr, n) })
		}
	}
	return cs
}

// Comparisons returns how each figure is judged, in table order.
func Comparisons() []Comparison {
	var cmp []Comparison
	for _, tr := range Transports {
		cmp = append(cmp, Comparison{Figure: "SessionThroughput/" + tr, Baseline: "Baseline/wggo-pair/1400", Factor: 1, Goal: 1,
			Note: "packet = tunnel MTU - 100 B, as the root benchmark"})
	}
	for _, path := range []string{"client-hub", "client-hub-client"} {
		for _, tr := range Transports {
			for _, size := range Sizes {
				s := strconv.Itoa(size)
				c := Comparison{Figure: "Packets/" + path + "/" + tr + "/" + s, Baseline: "Baseline/wggo-pair/" + s, Factor: 1}
				if size == 1400 {
					c.Goal = 1
				}
				if tr == "quic" && size == 1400 {
					c.Note = "QUIC tunnel MTU: 1280 B packets"
				}
				cmp = append(cmp, c)
			}
		}
	}
	for _, size := range Sizes {
		s := strconv.Itoa(size)
		cmp = append(cmp, Comparison{Figure: "Packets/client-hub/websocket/" + s, Baseline: "Baseline/tls13/" + s, Factor: 1,
			Note: "beside TLS 1.3, one record per packet"})
	}
	cmp = append(cmp, Comparison{Figure: "Packets/client-hub-client/websocket/1400", Baseline: "Baseline/chacha20poly1305/1400", Factor: 1, Goal: 0.5,
		Note: "two-core bound for a packet sealed and opened twice = one core's seal+open"})
	cmp = append(cmp, Comparison{Figure: "Baseline/noise-seal-open/1400", Baseline: "Baseline/chacha20poly1305/1400", Factor: 1})
	for _, to := range []string{"dial-listen", "dial-nat"} {
		for _, tr := range Transports {
			cmp = append(cmp, Comparison{Figure: "TCP/" + to + "/" + tr, Baseline: "TCP/wggo-netstack-pair", Factor: 1, Goal: 1})
		}
	}
	cmp = append(cmp, Comparison{Figure: "TCP/wggo-netstack-pair", Baseline: "Baseline/loopback-tcp", Factor: 1, Note: "the kernel's ceiling"})
	for _, tr := range Transports {
		for _, n := range ScaleClients[1:] {
			c := Comparison{Figure: "Scale/" + tr + "/clients=" + strconv.Itoa(n), Baseline: "Scale/" + tr + "/clients=1", Factor: 1}
			if n == 100 {
				c.Goal = 0.8
				c.Note = "each of 100 clients keeps " + strconv.Itoa(scaleWindow(n)) + " packets in flight, one client " + strconv.Itoa(scaleWindow(1))
			}
			cmp = append(cmp, c)
		}
		n := ScaleClients[len(ScaleClients)-1]
		w := strconv.Itoa(scaleWindow(n))
		cmp = append(cmp, Comparison{Figure: "Scale/" + tr + "/clients=" + strconv.Itoa(n), Baseline: "Scale/" + tr + "/clients=1,window=" + w, Factor: 1,
			Note: "beside one client with the same window, " + w + " packets"})
	}
	cmp = append(cmp, Comparison{Figure: "Handshake/responder", Baseline: "Handshake/x25519", Factor: 1.0 / 5, Goal: 0.8,
		Note: "a responder does five X25519"})
	for _, tr := range Transports {
		cmp = append(cmp, Comparison{Figure: "Handshake/connect/" + tr, Baseline: "Handshake/x25519", Factor: 1.0 / 5,
			Note: "whole connect, client and hub in one process"})
	}
	for _, tr := range Transports {
		for _, n := range IdleClients() {
			c := Comparison{Figure: "IdleHeap/" + tr + "/clients=" + strconv.Itoa(n), Baseline: "64 KiB (goal)", Fixed: 64, Factor: 1, Lower: true,
				Note: "hub process only; clients in a child process"}
			switch tr {
			case "websocket":
				c.Goal = 1
			case "wireguard":
				c.Note += "; with the session's wireguard-go peer (KiB/peer)"
			}
			cmp = append(cmp, c)
		}
	}
	return cmp
}

// RunGroup runs, as sub-benchmarks of b, the cases whose name starts with
// group + "/", nesting one b.Run per path element so go test's -bench
// patterns select them as usual.
func RunGroup(b *testing.B, group string) {
	var sub []Case
	for _, c := range Cases() {
		if rest, ok := strings.CutPrefix(c.Name, group+"/"); ok {
			sub = append(sub, Case{Name: rest, Metric: c.Metric, Run: c.Run})
		}
	}
	if len(sub) == 0 {
		b.Fatalf("no cases in group %q", group)
	}
	runTree(b, sub)
}

// runTree runs cases, grouped by their first path element.
func runTree(b *testing.B, cases []Case) {
	var order []string
	groups := map[string][]Case{}
	for _, c := range cases {
		head, rest, nested := strings.Cut(c.Name, "/")
		if _, seen := groups[head]; !seen {
			order = append(order, head)
		}
		if !nested {
			rest = ""
		}
		groups[head] = append(groups[head], Case{Name: rest, Metric: c.Metric, Run: c.Run})
	}
	for _, head := range order {
		g := groups[head]
		if len(g) == 1 && g[0].Name == "" {
			b.Run(head, g[0].Run)
			continue
		}
		b.Run(head, func(b *testing.B) { runTree(b, g) })
	}
}

// Value is the figure a case's result shows for metric: MB/s from the bytes
// per op, or a reported metric. ok is false when the result has neither.
// A packet case's MB/s counts only what was delivered: go test's MB/s
// counts what was sent, and the case reports delivered/op beside it.
func Value(r testing.BenchmarkResult, metric string) (v float64, ok bool) {
	if metric == "MB/s" {
		if r.Bytes <= 0 || r.T <= 0 {
			return 0, false
		}
		v = float64(r.Bytes) * float64(r.N) / 1e6 / r.T.Seconds()
		if d, ok := r.Extra["delivered/op"]; ok {
			v *= d
		}
		return v, true
	}
	v, ok = r.Extra[metric]
	return v, ok
}
