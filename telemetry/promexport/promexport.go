// Package promexport exports Warren's telemetry to Prometheus as a
// prometheus.Collector that the embedding program registers where it wants;
// Warren never opens a metrics port of its own (DESIGN §6).
//
// It reads a [Snapshot] from a [Source] at each scrape, so it depends on the
// telemetry package only and not on the root package: the root's Server (or
// any program) implements Source, and github.com/prometheus/client_golang stays
// out of the import graph of programs that do not import this package. That
// library was chosen because it is the reference Prometheus client, the one
// whose Collector interface embedding programs already register with; writing
// the text format by hand would leave those programs to glue it in.
//
// Metric names follow the Prometheus conventions: a warren_ prefix, base units
// in the name (_bytes, _seconds), _total on counters. Server-wide series carry
// bounded labels only (reason, transport, result, health). Per-client series
// carry a client label and are emitted only when [Options].PerClient is set,
// because their number grows with the registry: a hub with a handful of
// clients can afford them, one with thousands should not.
//
// Server-wide:
//
//	warren_received_bytes_total, warren_received_packets_total  from clients, toward the engine
//	warren_sent_bytes_total, warren_sent_packets_total          toward clients
//	warren_dropped_packets_total{reason}
//	warren_sessions{transport}                                  active sessions (gauge)
//	warren_sessions_opened_total{transport}
//	warren_handshakes_total{result="ok"|"failed"}
//	warren_handshake_drops_total{reason="rateLimited"|"queueFull"|"badMac"|"unknownKey"}
//	warren_clients{health}                                      connected clients by link health
//
// Per client, with PerClient:
//
//	warren_client_received_bytes_total{client}, warren_client_sent_bytes_total{client}
//	warren_client_received_packets_total{client}, warren_client_sent_packets_total{client}
//	warren_client_dropped_packets_total{client,reason}
//	warren_client_rtt_seconds{client}          smoothed RTT, only once measured
//	warren_client_rtt_jitter_seconds{client}   RFC 3550 jitter, only once measured
//	warren_client_keepalive_loss_ratio{client} only once a keepalive settled
//	warren_client_link_health{client,health}   1 for the current health, 0 for the others
//
// Nothing is invented for a client whose quality is unknown (a WireGuard peer):
// it has no RTT or loss series, and its link_health is 1 for "unknown".
// An examples/metrics program serving this collector comes with the root's
// wiring.
package promexport

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/warrenvpn/warren/telemetry"
)

// Snapshot is what one scrape reports.
type Snapshot struct {
	// Server holds the server-wide counters.
	Server telemetry.Statistics
	// Clients holds the connected clients. Their IDs must be unique.
	Clients []Client
}

// Client is one connected client's telemetry.
type Client struct {
	ID         string
	Statistics telemetry.Statistics
	Quality    telemetry.Quality
}

// Source supplies a Snapshot at each scrape. It is called from the scraping
// goroutine and must be safe for that.
type Source interface {
	Snapshot() Snapshot
}

// SourceFunc adapts a function to a Source.
type SourceFunc func() Snapshot

// Snapshot calls f.
func (f SourceFunc) Snapshot() Snapshot { return f() }

// Options tunes a Collector.
type Options struct {
	// PerClient adds the per-client series, labelled with the client ID. If
	// false, only server-wide series are exported.
	PerClient bool
}

// Collector is a prometheus.Collector over a Source.
type Collector struct {
	src  Source
	opts Options

	receivedBytes, sentBytes, receivedPackets, sentPackets *prometheus.Desc
	dropped, sessions, sessionsOpened, handshakes, clients *prometheus.Desc
	handshakeDrops                                         *prometheus.Desc

	cReceivedBytes, cSentBytes, cReceivedPackets, cSentPackets *prometheus.Desc
	cDropped, cRTT, cJitter, cLoss, cHealth                    *prometheus.Desc
}

// New returns a Collector reading src.
func New(src Source, opts Options) *Collector {
	d := prometheus.NewDesc
	client := []string{"client"}
	return &Collector{
		src:             src,
		opts:            opts,
		receivedBytes:   d("warren_received_bytes_total", "IP bytes received from clients, toward the engine.", nil, nil),
		sentBytes:       d("warren_sent_bytes_total", "IP bytes sent to clients.", nil, nil),
		receivedPackets: d("warren_received_packets_total", "IP packets received from clients, toward the engine.", nil, nil),
		sentPackets:     d("warren_sent_packets_total", "IP packets sent to clients.", nil, nil),
		dropped:         d("warren_dropped_packets_total", "Packets dropped, by reason.", []string{"reason"}, nil),
		sessions:        d("warren_sessions", "Active sessions, by transport.", []string{"transport"}, nil),
		sessionsOpened:  d("warren_sessions_opened_total", "Sessions opened, by transport.", []string{"transport"}, nil),
		handshakes:      d("warren_handshakes_total", "Handshakes, by result.", []string{"result"}, nil),
		handshakeDrops:  d("warren_handshake_drops_total", "Handshakes dropped by the flood protection or refused by the Noise responder, by reason.", []string{"reason"}, nil),
		clients:         d("warren_clients", "Connected clients, by link health.", []string{"health"}, nil),

		cReceivedBytes:   d("warren_client_received_bytes_total", "IP bytes received from the client.", client, nil),
		cSentBytes:       d("warren_client_sent_bytes_total", "IP bytes sent to the client.", client, nil),
		cReceivedPackets: d("warren_client_received_packets_total", "IP packets received from the client.", client, nil),
		cSentPackets:     d("warren_client_sent_packets_total", "IP packets sent to the client.", client, nil),
		cDropped:         d("warren_client_dropped_packets_total", "Packets of the client dropped, by reason.", []string{"client", "reason"}, nil),
		cRTT:             d("warren_client_rtt_seconds", "Smoothed keepalive round-trip time (RFC 6298 SRTT).", client, nil),
		cJitter:          d("warren_client_rtt_jitter_seconds", "Keepalive round-trip jitter (RFC 3550).", client, nil),
		cLoss:            d("warren_client_keepalive_loss_ratio", "Share of keepalives lost over the loss window.", client, nil),
		cHealth:          d("warren_client_link_health", "Link health of the client: 1 for the current state.", []string{"client", "health"}, nil),
	}
}

// Describe sends the descriptors of every series the Collector can export.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.receivedBytes, c.sentBytes, c.receivedPackets, c.sentPackets, c.dropped, c.sessions, c.sessionsOpened, c.handshakes, c.handshakeDrops, c.clients} {
		ch <- d
	}
	if c.opts.PerClient {
		for _, d := range []*prometheus.Desc{c.cReceivedBytes, c.cSentBytes, c.cReceivedPackets, c.cSentPackets, c.cDropped, c.cRTT, c.cJitter, c.cLoss, c.cHealth} {
			ch <- d
		}
	}
}

var healths = [...]telemetry.Health{telemetry.HealthUnknown, telemetry.HealthHealthy, telemetry.HealthDegraded, telemetry.HealthCritical}

// Collect takes one Snapshot from the Source and sends its series.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Snapshot()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}

	st := s.Server
	counter(c.receivedBytes, st.BytesIn)
	counter(c.sentBytes, st.BytesOut)
	counter(c.receivedPackets, st.PacketsIn)
	counter(c.sentPackets, st.PacketsOut)
	for r := range telemetry.NumDropReasons {
		counter(c.dropped, st.Drops.Get(r), r.String())
	}
	for t := range telemetry.NumTransports {
		n := st.Sessions.Get(t)
		gauge(c.sessions, float64(n.Active), t.String())
		counter(c.sessionsOpened, n.Opened, t.String())
	}
	counter(c.handshakes, st.HandshakesOK, "ok")
	counter(c.handshakes, st.HandshakesFailed, "failed")
	hd := st.HandshakeDrops
	counter(c.handshakeDrops, hd.RateLimited, "rateLimited")
	counter(c.handshakeDrops, hd.QueueFull, "queueFull")
	counter(c.handshakeDrops, hd.BadMAC, "badMac")
	counter(c.handshakeDrops, hd.UnknownKey, "unknownKey")
	var byHealth [len(healths)]int
	for _, cl := range s.Clients {
		if int(cl.Quality.Health) < len(byHealth) {
			byHealth[cl.Quality.Health]++
		}
	}
	for _, h := range healths {
		gauge(c.clients, float64(byHealth[h]), h.String())
	}

	if !c.opts.PerClient {
		return
	}
	for _, cl := range s.Clients {
		id, st, q := cl.ID, cl.Statistics, cl.Quality
		counter(c.cReceivedBytes, st.BytesIn, id)
		counter(c.cSentBytes, st.BytesOut, id)
		counter(c.cReceivedPackets, st.PacketsIn, id)
		counter(c.cSentPackets, st.PacketsOut, id)
		for r := range telemetry.NumDropReasons {
			counter(c.cDropped, st.Drops.Get(r), id, r.String())
		}
		if q.RTT.Samples > 0 {
			gauge(c.cRTT, q.RTT.Smoothed.Seconds(), id)
			gauge(c.cJitter, q.RTT.Jitter.Seconds(), id)
		}
		if q.Loss.Settled > 0 {
			gauge(c.cLoss, q.Loss.Ratio, id)
		}
		for _, h := range healths {
			v := 0.0
			if q.Health == h {
				v = 1
			}
			gauge(c.cHealth, v, id, h.String())
		}
	}
}
