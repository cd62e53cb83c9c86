package telemetry_test

import (
	"encoding/binary"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/warrenvpn/warren/internal/netem"
	"github.com/warrenvpn/warren/telemetry"
)

// TestEstimatorMeasuresWhatNetemInjects sends keepalives over real loopback
// UDP through a netem proxy (40 ms ± 5 ms each way, 10 % loss up) to an echo
// server and feeds the estimator with them on the system clock. Tolerances:
// SRTT in [80 ms, 120 ms] (the injected mean is 80 ms; scheduling on a loaded
// machine only adds), jitter in (0, 15 ms] (the injected RTT varies by
// ±10 ms), loss 10 % ± 6 points over 250 keepalives (binomial spread 1.9).
func TestEstimatorMeasuresWhatNetemInjects(t *testing.T) {
	if testing.Short() {
		t.Skip("real time: 5 s")
	}
	echo, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer echo.Close()
	wg.Go(func() {
		buf := make([]byte, 64)
		for {
			n, from, err := echo.ReadFromUDP(buf)
			if err != nil {
				return
			}
			echo.WriteToUDP(buf[:n], from)
		}
	})
	link := netem.Link{Delay: 40 * time.Millisecond, Jitter: 5 * time.Millisecond}
	up := link
	up.Loss = 0.10
	p, err := netem.ListenUDP(echo.LocalAddr().String(), netem.Config{Up: up, Down: link, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.DialUDP("udp", nil, p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	const n = 250
	e, err := telemetry.New(telemetry.Config{LossWindow: n})
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() {
		buf := make([]byte, 64)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			if k == 4 {
				e.Acked(binary.BigEndian.Uint32(buf))
			}
		}
	})
	var msg [4]byte
	for seq := uint32(1); seq <= n; seq++ {
		binary.BigEndian.PutUint32(msg[:], seq)
		e.Sent(seq)
		if _, err := c.Write(msg[:]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Settle the last ones: wait until nothing is pending (each ack is due
	// within an RTO of at least 1 s).
	deadline := time.Now().Add(30 * time.Second)
	for e.Check(); e.Quality().Loss.Settled < n; e.Check() {
		if time.Now().After(deadline) {
			t.Fatalf("keepalives never settled: %+v", e.Quality().Loss)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.Close() // stops the reader
	q := e.Quality()
	t.Logf("SRTT %v RTTVAR %v jitter %v min %v max %v loss %.3f (%d/%d)", q.RTT.Smoothed, q.RTT.Variance, q.RTT.Jitter, q.RTT.Min, q.RTT.Max, q.Loss.Ratio, q.Loss.Lost, q.Loss.Settled)
	if q.RTT.Smoothed < 80*time.Millisecond || q.RTT.Smoothed > 120*time.Millisecond {
		t.Errorf("SRTT %v, want 80-120 ms", q.RTT.Smoothed)
	}
	if q.RTT.Min < 70*time.Millisecond {
		t.Errorf("min RTT %v below the injected 70 ms", q.RTT.Min)
	}
	if q.RTT.Jitter <= 0 || q.RTT.Jitter > 15*time.Millisecond {
		t.Errorf("jitter %v, want (0, 15 ms]", q.RTT.Jitter)
	}
	if q.Loss.Ratio < 0.04 || q.Loss.Ratio > 0.16 {
		t.Errorf("loss %.3f, want 0.10 ± 0.06", q.Loss.Ratio)
	}
}
