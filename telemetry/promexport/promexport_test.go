package promexport_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/warrenvpn/warren/telemetry"
	"github.com/warrenvpn/warren/telemetry/promexport"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// knownSnapshot is what a known traffic pattern leaves in Counters: client
// "alice" over QUIC sent 10 packets (1000 bytes) of which 2 were refused by an
// ACL, got 4 back (600 bytes), with a measured link; "bob" is a WireGuard peer
// with one packet each way and an unknown quality.
func knownSnapshot(t *testing.T) promexport.Snapshot {
	var server, alice, bob telemetry.Counters
	alice.SessionOpened(telemetry.TransportQUIC)
	alice.Handshake(true)
	alice.AddIn(8, 800)
	alice.Drop(telemetry.DropACL, 2)
	alice.AddOut(4, 600)
	bob.SessionOpened(telemetry.TransportWireGuard)
	bob.Handshake(true)
	bob.AddIn(1, 60)
	bob.AddOut(1, 60)
	server.Handshake(false)
	srv := server.Snapshot()
	srv.HandshakeDrops = telemetry.HandshakeDrops{RateLimited: 7, QueueFull: 1, BadMAC: 2, UnknownKey: 3}
	a, b := alice.Snapshot(), bob.Snapshot()
	srv.Add(a)
	srv.Add(b)

	aq := telemetry.Quality{
		Health: telemetry.HealthDegraded,
		RTT:    telemetry.RTTStats{Samples: 10, Smoothed: 250 * time.Millisecond, Jitter: 20 * time.Millisecond},
		Loss:   telemetry.LossStats{Settled: 10, Lost: 1, Ratio: 0.1},
	}
	return promexport.Snapshot{Server: srv, Clients: []promexport.Client{
		{ID: "alice", Statistics: a, Quality: aq},
		{ID: "bob", Statistics: b},
	}}
}

func collector(t *testing.T, opts promexport.Options) *promexport.Collector {
	snap := knownSnapshot(t)
	return promexport.New(promexport.SourceFunc(func() promexport.Snapshot { return snap }), opts)
}

func TestCollectorPassesLint(t *testing.T) {
	for _, per := range []bool{false, true} {
		problems, err := testutil.CollectAndLint(collector(t, promexport.Options{PerClient: per}))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("PerClient %v: %s: %s", per, p.Metric, p.Text)
		}
	}
}

func TestCollectorReportsKnownTraffic(t *testing.T) {
	const want = `
# HELP warren_received_bytes_total IP bytes received from clients, toward the engine.
# TYPE warren_received_bytes_total counter
warren_received_bytes_total 860
# HELP warren_sent_packets_total IP packets sent to clients.
# TYPE warren_sent_packets_total counter
warren_sent_packets_total 5
# HELP warren_dropped_packets_total Packets dropped, by reason.
# TYPE warren_dropped_packets_total counter
warren_dropped_packets_total{reason="acl"} 2
warren_dropped_packets_total{reason="malformed"} 0
warren_dropped_packets_total{reason="noRoute"} 0
warren_dropped_packets_total{reason="oversized"} 0
warren_dropped_packets_total{reason="policy"} 0
warren_dropped_packets_total{reason="queueFull"} 0
warren_dropped_packets_total{reason="rateLimit"} 0
warren_dropped_packets_total{reason="spoofed"} 0
# HELP warren_sessions Active sessions, by transport.
# TYPE warren_sessions gauge
warren_sessions{transport="quic"} 1
warren_sessions{transport="websocket"} 0
warren_sessions{transport="wireguard"} 1
# HELP warren_handshakes_total Handshakes, by result.
# TYPE warren_handshakes_total counter
warren_handshakes_total{result="failed"} 1
warren_handshakes_total{result="ok"} 2
# HELP warren_handshake_drops_total Handshakes dropped by the flood protection or refused by the Noise responder, by reason.
# TYPE warren_handshake_drops_total counter
warren_handshake_drops_total{reason="badMac"} 2
warren_handshake_drops_total{reason="queueFull"} 1
warren_handshake_drops_total{reason="rateLimited"} 7
warren_handshake_drops_total{reason="unknownKey"} 3
# HELP warren_clients Connected clients, by link health.
# TYPE warren_clients gauge
warren_clients{health="critical"} 0
warren_clients{health="degraded"} 1
warren_clients{health="healthy"} 0
warren_clients{health="unknown"} 1
# HELP warren_client_received_bytes_total IP bytes received from the client.
# TYPE warren_client_received_bytes_total counter
warren_client_received_bytes_total{client="alice"} 800
warren_client_received_bytes_total{client="bob"} 60
# HELP warren_client_rtt_seconds Smoothed keepalive round-trip time (RFC 6298 SRTT).
# TYPE warren_client_rtt_seconds gauge
warren_client_rtt_seconds{client="alice"} 0.25
# HELP warren_client_rtt_jitter_seconds Keepalive round-trip jitter (RFC 3550).
# TYPE warren_client_rtt_jitter_seconds gauge
warren_client_rtt_jitter_seconds{client="alice"} 0.02
# HELP warren_client_keepalive_loss_ratio Share of keepalives lost over the loss window.
# TYPE warren_client_keepalive_loss_ratio gauge
warren_client_keepalive_loss_ratio{client="alice"} 0.1
# HELP warren_client_link_health Link health of the client: 1 for the current state.
# TYPE warren_client_link_health gauge
warren_client_link_health{client="alice",health="critical"} 0
warren_client_link_health{client="alice",health="degraded"} 1
warren_client_link_health{client="alice",health="healthy"} 0
warren_client_link_health{client="alice",health="unknown"} 0
warren_client_link_health{client="bob",health="critical"} 0
warren_client_link_health{client="bob",health="degraded"} 0
warren_client_link_health{client="bob",health="healthy"} 0
warren_client_link_health{client="bob",health="unknown"} 1
`
	c := collector(t, promexport.Options{PerClient: true})
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"warren_received_bytes_total", "warren_sent_packets_total", "warren_dropped_packets_total",
		"warren_sessions", "warren_handshakes_total", "warren_handshake_drops_total", "warren_clients",
		"warren_client_received_bytes_total", "warren_client_rtt_seconds", "warren_client_rtt_jitter_seconds",
		"warren_client_keepalive_loss_ratio", "warren_client_link_health"); err != nil {
		t.Fatal(err)
	}
	// The drops add up: received from clients = accepted + dropped.
	if got := testutil.ToFloat64(onlyDesc(c, "warren_received_packets_total")); got != 9 {
		t.Fatalf("received packets %v, want 9", got)
	}
}

// TestCollectorWithoutOptInHasNoClientLabel: by default no series is
// labelled with a client, whatever the number of clients.
func TestCollectorWithoutOptInHasNoClientLabel(t *testing.T) {
	c := collector(t, promexport.Options{})
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), "warren_client_") {
			t.Errorf("series %s without PerClient", f.GetName())
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "client" {
					t.Errorf("%s has a client label without PerClient", f.GetName())
				}
			}
		}
	}
	if n := testutil.CollectAndCount(c); n != 4+8+3+3+2+4+4 {
		t.Fatalf("%d series, want 28", n)
	}
}

// onlyDesc wraps c to collect only the named metric.
func onlyDesc(c prometheus.Collector, name string) prometheus.Collector {
	return filtered{c, name}
}

type filtered struct {
	prometheus.Collector
	name string
}

func (f filtered) Collect(ch chan<- prometheus.Metric) {
	all := make(chan prometheus.Metric)
	go func() { f.Collector.Collect(all); close(all) }()
	for m := range all {
		if strings.Contains(m.Desc().String(), `"`+f.name+`"`) {
			ch <- m
		}
	}
}
