package telemetry_test

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/warrenvpn/warren/telemetry"
	"github.com/warrenvpn/warren/telemetry/telemetrytest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// rig drives an estimator the way a client session does: one keepalive per
// interval the estimator asks for, its ack after the round trip, Check after.
type rig struct {
	t   *testing.T
	clk *telemetrytest.Clock
	e   *telemetry.Estimator
	seq uint32
	// changes records every health change Check or Acked reported.
	changes []telemetry.Health
}

func newRig(t *testing.T, cfg telemetry.Config) *rig {
	t.Helper()
	clk := telemetrytest.NewClock(epoch)
	cfg.Clock = clk
	e, err := telemetry.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &rig{t: t, clk: clk, e: e}
}

func (r *rig) note(u telemetry.Update) {
	if u.HealthChanged {
		r.changes = append(r.changes, u.Health)
	}
	if u.Dead {
		r.t.Fatal("peer declared dead in a round that heard it")
	}
}

// round sends one keepalive, acks it after rtt unless lost, and lets the rest
// of the keepalive interval pass.
func (r *rig) round(rtt time.Duration, lost bool) {
	interval := r.e.Interval()
	r.seq++
	r.e.Sent(r.seq)
	r.clk.Advance(rtt)
	if !lost {
		r.note(r.e.Acked(r.seq))
	}
	r.clk.Advance(interval - rtt)
	if lost {
		// the session heard data traffic meanwhile; only keepalives were lost
		r.e.Heard()
	}
	r.note(r.e.Check())
}

func TestConfigValidateRefusesOutOfRange(t *testing.T) {
	for _, tc := range []struct {
		cfg   telemetry.Config
		field string
	}{
		{telemetry.Config{HealthyInterval: -time.Second}, "healthyInterval"},
		{telemetry.Config{DegradedInterval: 2 * time.Minute}, "degradedInterval"},
		{telemetry.Config{CriticalInterval: 40 * time.Second}, "criticalInterval"},
		{telemetry.Config{DeadAfter: 100 * time.Second}, "deadAfter"},
		{telemetry.Config{LossWindow: -1}, "lossWindow"},
		{telemetry.Config{LossWindow: telemetry.MaxLossWindow + 1}, "lossWindow"},
		{telemetry.Config{Thresholds: telemetry.Thresholds{DegradedLoss: 1.5}}, "thresholds.degradedLoss"},
		{telemetry.Config{Thresholds: telemetry.Thresholds{CriticalLoss: 0.01}}, "thresholds.criticalLoss"},
		{telemetry.Config{Thresholds: telemetry.Thresholds{CriticalRTT: 100 * time.Millisecond}}, "thresholds.criticalRtt"},
		{telemetry.Config{Thresholds: telemetry.Thresholds{CriticalConsecutiveLoss: 40}}, "thresholds.criticalConsecutiveLoss"},
		{telemetry.Config{Thresholds: telemetry.Thresholds{RecoverLossFactor: 2}}, "thresholds.recoverLossFactor"},
		{telemetry.Config{Thresholds: telemetry.Thresholds{RecoverRTTFactor: -1}}, "thresholds.recoverRttFactor"},
		{telemetry.Config{Thresholds: telemetry.Thresholds{RecoverAcks: -1}}, "thresholds.recoverAcks"},
	} {
		_, err := telemetry.New(tc.cfg)
		var ce *telemetry.ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("New(%+v) = %v, want ConfigError on %s", tc.cfg, err, tc.field)
		}
	}
	if err := (telemetry.Config{}).Validate(); err != nil {
		t.Errorf("zero Config: %v", err)
	}
}

// TestEstimatesConverge feeds a stream with known delay, jitter and loss:
// RTT = 80 ms + uniform[0, 40 ms), 10 % of keepalives lost at random (seeded).
// Expected: SRTT near the mean 100 ms (±10 ms; its EWMA spread is ≈3 ms),
// RTTVAR near E|R-mean| = 10 ms (±4 ms), RFC 3550 jitter near
// E|R1-R2| = 40/3 ≈ 13.3 ms (±4 ms), min/max inside [80, 120) ms and near the
// ends (±2 ms), loss over a 1000-keepalive window at 10 % (±3 points; its
// binomial spread is ≈1 point).
func TestEstimatesConverge(t *testing.T) {
	r := newRig(t, telemetry.Config{LossWindow: 1000, Thresholds: telemetry.Thresholds{CriticalLoss: 0.9, DegradedLoss: 0.8, CriticalConsecutiveLoss: 50}})
	rng := rand.New(rand.NewPCG(1, 2))
	const base, spread = 80 * time.Millisecond, 40 * time.Millisecond
	for range 3000 {
		rtt := base + time.Duration(rng.Int64N(int64(spread)))
		r.round(rtt, rng.Float64() < 0.10)
	}
	q := r.e.Quality()
	near := func(name string, got, want, tol time.Duration) {
		t.Helper()
		if d := got - want; d < -tol || d > tol {
			t.Errorf("%s = %v, want %v ± %v", name, got, want, tol)
		}
	}
	near("SRTT", q.RTT.Smoothed, 100*time.Millisecond, 10*time.Millisecond)
	near("RTTVAR", q.RTT.Variance, 10*time.Millisecond, 4*time.Millisecond)
	near("jitter", q.RTT.Jitter, 13333*time.Microsecond, 4*time.Millisecond)
	near("min", q.RTT.Min, base, 2*time.Millisecond)
	near("max", q.RTT.Max, base+spread, 2*time.Millisecond)
	if q.RTT.Min < base || q.RTT.Max >= base+spread {
		t.Errorf("min/max %v/%v outside the injected [%v, %v)", q.RTT.Min, q.RTT.Max, base, base+spread)
	}
	if q.Loss.Settled != 1000 || q.Loss.Ratio < 0.07 || q.Loss.Ratio > 0.13 {
		t.Errorf("loss = %+v, want ratio 0.10 ± 0.03 over 1000", q.Loss)
	}
	if q.RTT.Samples < 2500 || q.RTT.Samples > 2900 {
		t.Errorf("RTT samples = %d, want ≈ 2700 (3000 less 10 %% lost)", q.RTT.Samples)
	}
}

// TestLossRatioOverWindow: every fifth keepalive lost gives exactly 20 % once
// the 20-keepalive window is full, and the window forgets older keepalives.
func TestLossRatioOverWindow(t *testing.T) {
	r := newRig(t, telemetry.Config{LossWindow: 20, Thresholds: telemetry.Thresholds{CriticalLoss: 0.5, CriticalConsecutiveLoss: 5}})
	for i := range 100 {
		r.round(20*time.Millisecond, i%5 == 4)
	}
	if q := r.e.Quality().Loss; q != (telemetry.LossStats{Settled: 20, Lost: 4, Ratio: 0.2}) {
		t.Fatalf("loss = %+v, want 4 of 20", q)
	}
	for range 20 {
		r.round(20*time.Millisecond, false)
	}
	if q := r.e.Quality().Loss; q.Lost != 0 || q.Settled != 20 {
		t.Fatalf("loss after 20 good = %+v, want none", q)
	}
}

func TestLossFromGapAndTimeout(t *testing.T) {
	r := newRig(t, telemetry.Config{})
	e, clk := r.e, r.clk
	e.Sent(1)
	clk.Advance(time.Second)
	e.Sent(2)
	clk.Advance(50 * time.Millisecond)
	e.Acked(2) // 1 is lost: its ack would have come first
	if q := e.Quality(); q.Loss.Lost != 1 || q.Loss.Settled != 2 || q.RTT.Last != 50*time.Millisecond {
		t.Fatalf("after gap: %+v", q)
	}
	e.Acked(1) // late after all: no longer lost, and a true RTT sample
	if q := e.Quality(); q.Loss.Lost != 0 || q.RTT.Last != 1050*time.Millisecond || q.RTT.Samples != 2 {
		t.Fatalf("after late ack: %+v", q)
	}
	e.Acked(1) // duplicate: nothing
	if q := e.Quality(); q.RTT.Samples != 2 {
		t.Fatalf("duplicate ack sampled: %+v", q)
	}

	e.Sent(3)
	rto := e.NextCheck().Sub(clk.Now())
	// RFC 6298 RTO: SRTT + 4 RTTVAR, at least 1 s.
	if rto < time.Second || rto > 5*time.Second {
		t.Fatalf("ack deadline in %v, want an RTO in [1 s, 5 s]", rto)
	}
	clk.Advance(rto - time.Millisecond)
	e.Check()
	if q := e.Quality(); q.Loss.Lost != 0 {
		t.Fatalf("lost before its deadline: %+v", q.Loss)
	}
	clk.Advance(time.Millisecond)
	e.Check()
	if q := e.Quality(); q.Loss.Lost != 1 || q.Loss.Settled != 3 {
		t.Fatalf("not lost at its deadline: %+v", q.Loss)
	}
	e.Acked(99) // never sent: only heard
	if q := e.Quality(); q.RTT.Samples != 2 || !q.LastHeard.Equal(clk.Now()) {
		t.Fatalf("unknown ack: %+v", q)
	}
}

// TestReceiverLossFromSequenceGaps: the answering side counts skipped
// sequence numbers as lost until they arrive, across the u32 wrap.
func TestReceiverLossFromSequenceGaps(t *testing.T) {
	r := newRig(t, telemetry.Config{})
	e := r.e
	for _, s := range []uint32{0xFFFFFFFE, 0xFFFFFFFF, 1, 2} { // 0 skipped
		e.Received(s)
	}
	if q := e.Quality(); q.Loss.Lost != 1 || q.Loss.Settled != 5 || q.RTT.Samples != 0 {
		t.Fatalf("after gap: %+v", q)
	}
	e.Received(0)
	e.Received(2)
	if q := e.Quality().Loss; q.Lost != 0 || q.Settled != 5 {
		t.Fatalf("after late arrival and duplicate: %+v", q)
	}
	e.Received(1000) // a jump larger than the window fills it with losses
	if q := e.Quality().Loss; q.Lost != telemetry.DefaultLossWindow-1 || q.Settled != telemetry.DefaultLossWindow {
		t.Fatalf("after jump: %+v", q)
	}
	if h := e.Health(); h != telemetry.HealthCritical {
		t.Fatalf("health = %v, want critical", h)
	}
}

// TestHealthFollowsLinkAndKeepaliveFollowsHealth walks healthy → degraded
// (RTT) → critical (loss) → degraded → healthy and checks each change is
// reported once and the keepalive interval follows: 60 s, 30 s, 10 s.
func TestHealthFollowsLinkAndKeepaliveFollowsHealth(t *testing.T) {
	r := newRig(t, telemetry.Config{})
	if h, iv := r.e.Health(), r.e.Interval(); h != telemetry.HealthUnknown || iv != 30*time.Second {
		t.Fatalf("start: %v every %v, want unknown every 30s", h, iv)
	}
	want := func(h telemetry.Health, iv time.Duration) {
		t.Helper()
		if got := r.e.Health(); got != h {
			t.Fatalf("health = %v, want %v (quality %+v)", got, h, r.e.Quality())
		}
		if got := r.e.Interval(); got != iv {
			t.Fatalf("interval = %v, want %v", got, iv)
		}
	}
	for range 10 {
		r.round(40*time.Millisecond, false)
	}
	want(telemetry.HealthHealthy, 60*time.Second)

	for range 20 { // RTT 500 ms: SRTT crosses 300 ms
		r.round(500*time.Millisecond, false)
	}
	want(telemetry.HealthDegraded, 30*time.Second)

	for i := range 16 { // every other keepalive lost: 50 % over the window
		r.round(40*time.Millisecond, i%2 == 0)
	}
	want(telemetry.HealthCritical, 10*time.Second)

	// Good keepalives push the losses out of the 32-window: under 10 %
	// (recover from critical) then under 2.5 % (recover from degraded).
	for range 40 {
		r.round(40*time.Millisecond, false)
	}
	want(telemetry.HealthHealthy, 60*time.Second)

	wantChanges := []telemetry.Health{telemetry.HealthHealthy, telemetry.HealthDegraded, telemetry.HealthCritical, telemetry.HealthDegraded, telemetry.HealthHealthy}
	if !equalHealth(r.changes, wantChanges) {
		t.Fatalf("changes = %v, want %v", r.changes, wantChanges)
	}
}

func equalHealth(a, b []telemetry.Health) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestHealthDoesNotFlapAtThreshold: SRTT hovering around the 300 ms degraded
// threshold (six samples of 340 ms, six of 260 ms, and again) changes health once, not at
// every crossing.
func TestHealthDoesNotFlapAtThreshold(t *testing.T) {
	r := newRig(t, telemetry.Config{})
	for range 5 {
		r.round(290*time.Millisecond, false)
	}
	crossings := 0
	above := false
	for i := range 200 {
		rtt := 260 * time.Millisecond
		if (i/6)%2 == 0 {
			rtt = 340 * time.Millisecond
		}
		r.round(rtt, false)
		if a := r.e.Quality().RTT.Smoothed >= 300*time.Millisecond; a != above {
			crossings++
			above = a
		}
	}
	if crossings < 10 {
		t.Fatalf("SRTT crossed the threshold %d times; the test needs it to hover", crossings)
	}
	if len(r.changes) > 2 { // healthy, then degraded once
		t.Fatalf("health flapped: %v over %d threshold crossings", r.changes, crossings)
	}
}

// TestConsecutiveLossIsCritical: three unanswered keepalives make a healthy
// link critical before the window's ratio would.
func TestConsecutiveLossIsCritical(t *testing.T) {
	r := newRig(t, telemetry.Config{LossWindow: 100, Thresholds: telemetry.Thresholds{CriticalLoss: 0.5}})
	for range 50 {
		r.round(30*time.Millisecond, false)
	}
	r.round(30*time.Millisecond, true)
	r.round(30*time.Millisecond, true)
	if h := r.e.Health(); h != telemetry.HealthHealthy {
		t.Fatalf("after 2 losses: %v, want healthy (2 of 52 is under 5 %%)", h)
	}
	r.round(30*time.Millisecond, true)
	if h := r.e.Health(); h != telemetry.HealthCritical {
		t.Fatalf("after 3 losses in a row: %v, want critical", h)
	}
}

// TestDeadPeerFiresOnce: silence of DeadAfter declares the peer dead in
// exactly one Check; anything heard before resets the timer.
func TestDeadPeerFiresOnce(t *testing.T) {
	r := newRig(t, telemetry.Config{DeadAfter: 120 * time.Second, HealthyInterval: 60 * time.Second})
	e, clk := r.e, r.clk
	if d := e.NextCheck().Sub(clk.Now()); d != 120*time.Second {
		t.Fatalf("first deadline in %v, want 120s", d)
	}
	clk.Advance(100 * time.Second)
	e.Heard()
	clk.Advance(119 * time.Second)
	if u := e.Check(); u.Dead {
		t.Fatal("dead 119 s after last heard")
	}
	e.Sent(1) // sending is not hearing
	clk.Advance(time.Second)
	dead := 0
	for range 5 {
		if e.Check().Dead {
			dead++
		}
		clk.Advance(time.Minute)
	}
	if dead != 1 {
		t.Fatalf("dead reported %d times, want once", dead)
	}
	if q := e.Quality(); !q.Dead || !e.NextCheck().IsZero() {
		t.Fatalf("quality %+v, next check %v", q, e.NextCheck())
	}
}

func TestQualityUnknownIsExplicitAndNothingInvented(t *testing.T) {
	b, err := json.Marshal(telemetry.Quality{})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"health":"unknown"}` {
		t.Fatalf("zero Quality = %s", b)
	}
	r := newRig(t, telemetry.Config{})
	r.e.Received(7) // hub side: loss known, RTT not
	b, _ = json.Marshal(r.e.Quality())
	s := string(b)
	for _, w := range []string{`"health":"healthy"`, `"loss":{"settled":1,"lost":0,"ratio":0}`, `"keepaliveIntervalNs":60000000000`} {
		if !strings.Contains(s, w) {
			t.Errorf("quality JSON %s lacks %s", s, w)
		}
	}
	if strings.Contains(s, "rtt") {
		t.Errorf("quality JSON %s invents an RTT", s)
	}
	var q telemetry.Quality
	if err := json.Unmarshal(b, &q); err != nil || q.Health != telemetry.HealthHealthy {
		t.Fatalf("round trip: %v %+v", err, q)
	}
}
