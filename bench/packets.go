package bench

import (
	"context"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenvpn/warren"
	fwdtesting "github.com/warrenvpn/warren/forward/testing"
)

// window is how many packets a sender keeps in flight: enough to fill the
// pipeline, few enough that no queue drops them for want of space.
const window = 256

// lossWait is how long a sender waits for an arrival before it counts the
// packets in flight as lost (QUIC datagrams, like IP, may be dropped).
const lossWait = 100 * time.Millisecond

// scaleLossWait is lossWait for one of n clients sending at once: its
// packets queue at the hub behind the other clients' windows, so an arrival
// may take n times as long without anything being lost. A shorter wait
// counts queued packets as lost, lets the sender put more in flight than
// its window, and with 100 clients on a loaded machine overflowed the
// hub's UDP receive buffer (real drops, a tenth of the packets).
func scaleLossWait(n int) time.Duration { return lossWait * time.Duration(max(1, n/10)) }

// arrivals counts the packets that reached one end and wakes a waiting
// sender.
type arrivals struct {
	n    atomic.Uint64
	wake chan struct{}
}

func newArrivals() *arrivals { return &arrivals{wake: make(chan struct{}, 1)} }

func (a *arrivals) add(n uint64) {
	a.n.Add(n)
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// drain counts what eng receives into a (or, when by is set, into the
// arrivals of the packet's source address) until ctx ends. It returns a
// function that stops it and waits.
func drainEngine(eng *fwdtesting.Engine, a *arrivals, by map[netip.Addr]*arrivals) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			p, err := eng.Next(ctx)
			if err != nil {
				return
			}
			if by == nil {
				a.add(1)
				continue
			}
			if len(p) >= 20 {
				if to := by[netip.AddrFrom4([4]byte(p[12:16]))]; to != nil {
					to.add(1)
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

// drainTUN counts the packets a stock peer's device writes to its TUN.
func drainTUN(p *stockPeer, a *arrivals) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-p.tun.Inbound:
				a.add(1)
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() { cancel(); <-done }
}

// pump sends n packets with send, keeping at most window in flight as
// counted by a, and waits for the last ones. It returns how many arrived
// (counted from a's value at the start) and how many it gave up on: when
// nothing arrives for loss, everything still in flight counts as lost,
// so a loss stalls the sender once per window, not once per packet.
func pump(n, window int, loss time.Duration, send func() error, a *arrivals) (arrived, lost int64, err error) {
	base := int64(a.n.Load())
	got := func() int64 { return int64(a.n.Load()) - base }
	timer := time.NewTimer(loss)
	defer timer.Stop()
	var sent int64
	wait := func() {
		timer.Reset(loss)
		select {
		case <-a.wake:
		case <-timer.C:
			lost = max(lost, sent-got())
		}
	}
	for sent < int64(n) {
		if err := send(); err != nil {
			return got(), lost, err
		}
		sent++
		for sent-got()-lost >= int64(window) {
			wait()
		}
	}
	for sent-got()-lost > 0 {
		wait()
	}
	return min(got(), sent), lost, nil
}

// end is one side of a packet benchmark: a Warren client with a testing
// engine or a stock wireguard-go peer.
type end struct {
	ip   netip.Addr
	mtu  int
	send func(pkt []byte) error // one packet into the tunnel
	recv *arrivals              // packets out of the tunnel at this end
	stop func()
}

// newEnd connects a client over tr to s. Packets to it are counted.
func newEnd(b *testing.B, s *warren.Server, tr, id string, allowed netip.Prefix) *end {
	b.Helper()
	bundle := newBundle(b, s, id)
	a := newArrivals()
	if tr == "wireguard" {
		p := newStockPeer(b, s, bundle, allowed)
		e := &end{ip: p.ip, mtu: 1420, recv: a, stop: drainTUN(p, a)}
		e.send = func(pkt []byte) error { p.tun.Outbound <- pkt; return nil }
		b.Cleanup(e.stop)
		return e
	}
	eng := newEngine()
	c, info := connectClient(b, s, bundle, tr, eng)
	e := &end{ip: info.AssignedIP.Addr(), mtu: c.MTUInfo().TunnelMTU, recv: a, stop: drainEngine(eng, a, nil)}
	e.send = eng.Inject
	b.Cleanup(e.stop)
	return e
}

// udpPacket is an IPv4 UDP packet of size bytes in all.
func udpPacket(src, dst netip.Addr, size int) []byte {
	return fwdtesting.UDPPacket(netip.AddrPortFrom(src, 40000), netip.AddrPortFrom(dst, 9), make([]byte, size-28))
}

// runPump times pump over b.N packets of len(pkt) bytes and reports the
// figures.
func runPump(b *testing.B, pkt []byte, send func() error, a *arrivals) {
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu := time.Now(), cpuTime()
	arrived, lost, err := pump(b.N, window, lossWait, send, a)
	el, cpu := time.Since(start), cpuTime()-cpu
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(arrived)/el.Seconds(), "pkts/s")
	reportCPU(b, cpu, arrived)
	b.ReportMetric(float64(arrived)/float64(b.N), "delivered/op")
	b.ReportMetric(float64(lost)/float64(b.N), "lost/op")
}

// benchPackets: packets of size bytes from a client to the hub's testing
// engine, or (toClient) to a second client of the same transport through
// the hub.
func benchPackets(b *testing.B, tr string, toClient bool, size int) {
	hubEng := newEngine()
	s := newHub(b, hubOptions{engine: hubEng})
	all := netip.MustParsePrefix("0.0.0.0/0")
	src := newEnd(b, s, tr, "src", all)
	size = min(size, src.mtu)
	var pkt []byte
	var a *arrivals
	if toClient {
		dst := newEnd(b, s, tr, "dst", all)
		pkt = udpPacket(src.ip, dst.ip, size)
		a = dst.recv
	} else {
		a = newArrivals()
		b.Cleanup(drainEngine(hubEng, a, nil))
		pkt = udpPacket(src.ip, farAddr, size)
	}
	runPump(b, pkt, func() error { return src.send(pkt) }, a)
}

// benchSessionThroughput is the root package's BenchmarkSessionThroughput
// over tr: packets of the tunnel MTU - 100 bytes from a client's engine to
// the hub's engine.
func benchSessionThroughput(b *testing.B, tr string) {
	hubEng := newEngine()
	s := newHub(b, hubOptions{engine: hubEng})
	src := newEnd(b, s, tr, "bench", netip.MustParsePrefix("0.0.0.0/0"))
	a := newArrivals()
	b.Cleanup(drainEngine(hubEng, a, nil))
	pkt := udpPacket(src.ip, farAddr, src.mtu-100)
	runPump(b, pkt, func() error { return src.send(pkt) }, a)
}

// scaleWindow is the window each of n clients of a Scale case keeps in
// flight: the clients share one window's worth of queue at the hub's engine
// (within its buffer), so what is lost is lost in the tunnel. A window of
// its own for each (256 each for 100 clients) overflows the hub's queues
// like a flood: a tenth of QUIC's packets and a third of WireGuard's were
// lost, which no sender that backs off (TCP) would do.
func scaleWindow(n int) int { return max(8, min(window, 1024/n)) }

// benchScale: n clients of transport tr send 1400-byte packets (or the
// tunnel MTU, if smaller) to the hub's engine at once; the figure is the
// aggregate. Each client keeps perClient packets in flight.
func benchScale(b *testing.B, tr string, n, perClient int) {
	hubEng := newEngine()
	s := newHub(b, hubOptions{engine: hubEng})
	all := netip.MustParsePrefix("0.0.0.0/0")
	ends := make([]*end, n)
	by := make(map[netip.Addr]*arrivals, n)
	for i := range ends {
		ends[i] = newEnd(b, s, tr, "c"+strconv.Itoa(i), all)
		by[ends[i].ip] = newArrivals()
	}
	b.Cleanup(drainEngine(hubEng, nil, by))
	size := min(1400, ends[0].mtu)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu := time.Now(), cpuTime()
	var wg sync.WaitGroup
	var arrived, lost atomic.Int64
	errs := make(chan error, n)
	for i, e := range ends {
		share := b.N / n
		if i < b.N%n {
			share++
		}
		pkt := udpPacket(e.ip, farAddr, size)
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, gone, err := pump(share, perClient, scaleLossWait(n), func() error { return e.send(pkt) }, by[e.ip])
			arrived.Add(got)
			lost.Add(gone)
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	el, cpu := time.Since(start), cpuTime()-cpu
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(arrived.Load())/el.Seconds(), "pkts/s")
	b.ReportMetric(float64(arrived.Load())/float64(b.N), "delivered/op")
	b.ReportMetric(float64(lost.Load())/float64(b.N), "lost/op")
	reportCPU(b, cpu, arrived.Load())
}

// reportCPU reports the process's CPU time per delivered packet (cpu-µs/pkt):
// every end's share and the hub's together, as for the baselines. Unlike
// MB/s it hardly moves when other processes compete for the cores, so it
// compares cases measured at different times on a busy machine.
func reportCPU(b *testing.B, cpu time.Duration, arrived int64) {
	if cpu > 0 && arrived > 0 {
		b.ReportMetric(float64(cpu.Microseconds())/float64(arrived), "cpu-µs/pkt")
	}
}
