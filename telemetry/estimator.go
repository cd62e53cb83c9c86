package telemetry

import (
	"sync"
	"time"
)

// RFC 6298 bounds of the retransmission timeout, used here as the time after
// which an unanswered keepalive is lost.
const (
	initialRTO = 3 * time.Second
	minRTO     = time.Second
	maxRTO     = 60 * time.Second
)

// slot states
const (
	pending uint8 = iota
	received
	lost
)

type slot struct {
	seq   uint32
	sent  time.Time // sender side only
	state uint8
}

// Update is what one call to an [Estimator] changed.
type Update struct {
	// Health is the health after the call, Previous the one before.
	Health   Health
	Previous Health
	// HealthChanged reports Health != Previous.
	HealthChanged bool
	// Dead reports that this call declared the peer dead. It is true for
	// exactly one call in an estimator's life.
	Dead bool
}

// Estimator measures one session's link from its keepalives; the package doc
// describes the estimates. It is safe for concurrent use.
type Estimator struct {
	cfg   Config
	clock Clock

	mu sync.Mutex
	// ring holds the most recent keepalives, oldest first from head.
	ring  []slot
	head  int
	count int
	// highest is the highest sequence number received (receiving side).
	highest    uint32
	anyRecv    bool
	health     Health
	goodStreak int
	lastHeard  time.Time
	dead       bool

	rtt    RTTStats
	jitter float64 // ns, unrounded
}

// New returns an estimator for a session that starts now (by cfg.Clock): the
// dead-peer timer starts with it.
func New(cfg Config) (*Estimator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Estimator{
		cfg:       cfg,
		clock:     cfg.Clock,
		ring:      make([]slot, cfg.LossWindow),
		lastHeard: cfg.Clock.Now(),
	}, nil
}

// Sent records that the keepalive with sequence number seq was sent now.
// Sequence numbers increase by one per keepalive and may wrap.
func (e *Estimator) Sent(seq uint32) {
	now := e.clock.Now()
	e.mu.Lock()
	e.push(slot{seq: seq, sent: now, state: pending})
	e.mu.Unlock()
}

// Acked records the KeepaliveAck of seq: an RTT sample measured against the
// time Sent recorded, and a keepalive received. Keepalives sent before seq
// and still unanswered are lost. An ack of a keepalive no longer in the
// window, or never sent, counts only as traffic heard.
func (e *Estimator) Acked(seq uint32) Update {
	now := e.clock.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lastHeard = now
	i, ok := e.find(seq)
	if !ok {
		return e.unchanged()
	}
	s := &e.ring[i]
	if s.state == received {
		return e.unchanged() // duplicate
	}
	s.state = received
	if rtt := now.Sub(s.sent); rtt >= 0 {
		e.sample(rtt)
	}
	// Every older keepalive still pending is lost: its ack would have come first.
	for j := 0; j < e.count; j++ {
		o := &e.ring[(e.head+j)%len(e.ring)]
		if o.state == pending && int32(seq-o.seq) > 0 {
			o.state = lost
		}
	}
	return e.evaluate(true)
}

// Received records, on the side that answers keepalives, that the Keepalive
// seq arrived. Sequence numbers skipped over are lost until they arrive.
func (e *Estimator) Received(seq uint32) Update {
	now := e.clock.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lastHeard = now
	if !e.anyRecv || int32(seq-e.highest) > 0 {
		if e.anyRecv {
			gap := seq - e.highest - 1
			if gap > uint32(len(e.ring)) {
				gap = uint32(len(e.ring))
			}
			for k := gap; k > 0; k-- {
				e.push(slot{seq: seq - k, state: lost})
			}
		}
		e.anyRecv = true
		e.highest = seq
		e.push(slot{seq: seq, state: received})
		return e.evaluate(true)
	}
	i, ok := e.find(seq)
	if !ok || e.ring[i].state == received {
		return e.unchanged() // too old, or a duplicate
	}
	e.ring[i].state = received
	return e.evaluate(true)
}

// Heard records that a frame other than a keepalive came from the peer now.
// Only the dead-peer timer hears of it.
func (e *Estimator) Heard() {
	now := e.clock.Now()
	e.mu.Lock()
	if now.After(e.lastHeard) {
		e.lastHeard = now
	}
	e.mu.Unlock()
}

// Check settles keepalives whose ack is overdue and declares the peer dead
// once it has been silent for DeadAfter. Call it on a timer; [Estimator.NextCheck]
// says when it has something to do.
func (e *Estimator) Check() Update {
	now := e.clock.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	rto := e.rto()
	settled := false
	for j := 0; j < e.count; j++ {
		s := &e.ring[(e.head+j)%len(e.ring)]
		if s.state == pending && now.Sub(s.sent) > rto {
			s.state = lost
			settled = true
		}
	}
	u := e.unchanged()
	if settled {
		u = e.evaluate(false)
	}
	if !e.dead && now.Sub(e.lastHeard) >= e.cfg.DeadAfter {
		e.dead = true
		u.Dead = true
	}
	return u
}

// NextCheck returns when [Estimator.Check] next has something to do: the
// earliest ack deadline of a pending keepalive or the dead-peer deadline.
// It returns the zero time once the peer is dead.
func (e *Estimator) NextCheck() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dead {
		return time.Time{}
	}
	next := e.lastHeard.Add(e.cfg.DeadAfter)
	rto := e.rto()
	for j := 0; j < e.count; j++ {
		s := e.ring[(e.head+j)%len(e.ring)]
		if s.state == pending {
			if t := s.sent.Add(rto).Add(time.Nanosecond); t.Before(next) {
				next = t
			}
		}
	}
	return next
}

// Interval returns the keepalive interval the current health asks for.
func (e *Estimator) Interval() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.interval()
}

// Health returns the current link health.
func (e *Estimator) Health() Health {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.health
}

// Quality returns a snapshot of the estimates.
func (e *Estimator) Quality() Quality {
	e.mu.Lock()
	defer e.mu.Unlock()
	q := Quality{
		Health:            e.health,
		RTT:               e.rtt,
		KeepaliveInterval: e.interval(),
		LastHeard:         e.lastHeard,
		Dead:              e.dead,
	}
	if settled, nlost, _ := e.lossCounts(); settled > 0 {
		q.Loss = LossStats{Settled: settled, Lost: nlost, Ratio: float64(nlost) / float64(settled)}
	}
	return q
}

func (e *Estimator) interval() time.Duration {
	switch e.health {
	case HealthHealthy:
		return e.cfg.HealthyInterval
	case HealthDegraded:
		return e.cfg.DegradedInterval
	case HealthCritical:
		return e.cfg.CriticalInterval
	}
	return e.cfg.UnknownInterval
}

func (e *Estimator) unchanged() Update {
	return Update{Health: e.health, Previous: e.health}
}

// push appends s, dropping the oldest keepalive when the window is full.
func (e *Estimator) push(s slot) {
	if e.count < len(e.ring) {
		e.ring[(e.head+e.count)%len(e.ring)] = s
		e.count++
		return
	}
	e.ring[e.head] = s
	e.head = (e.head + 1) % len(e.ring)
}

func (e *Estimator) find(seq uint32) (int, bool) {
	for j := e.count - 1; j >= 0; j-- {
		i := (e.head + j) % len(e.ring)
		if e.ring[i].seq == seq {
			return i, true
		}
	}
	return 0, false
}

// sample folds one RTT sample into the RFC 6298 and RFC 3550 estimates.
func (e *Estimator) sample(r time.Duration) {
	st := &e.rtt
	if st.Samples == 0 {
		st.Smoothed = r
		st.Variance = r / 2
		st.Min, st.Max = r, r
	} else {
		d := st.Smoothed - r
		if d < 0 {
			d = -d
		}
		st.Variance = (3*st.Variance + d) / 4
		st.Smoothed = (7*st.Smoothed + r) / 8
		st.Min = min(st.Min, r)
		st.Max = max(st.Max, r)
		d = r - st.Last
		if d < 0 {
			d = -d
		}
		e.jitter += (float64(d) - e.jitter) / 16
		st.Jitter = time.Duration(e.jitter)
	}
	st.Last = r
	st.Samples++
}

// rto is the RFC 6298 retransmission timeout: how long an ack may take.
func (e *Estimator) rto() time.Duration {
	if e.rtt.Samples == 0 {
		return initialRTO
	}
	return min(max(e.rtt.Smoothed+4*e.rtt.Variance, minRTO), maxRTO)
}

// lossCounts returns how many keepalives of the window are settled and lost,
// and how many of the most recent settled ones were lost in a row.
func (e *Estimator) lossCounts() (settled, nlost, run int) {
	counting := true
	for j := e.count - 1; j >= 0; j-- {
		switch e.ring[(e.head+j)%len(e.ring)].state {
		case received:
			settled++
			counting = false
		case lost:
			settled++
			nlost++
			if counting {
				run++
			}
		}
	}
	return settled, nlost, run
}

// classify returns the health the estimates give with thresholds scaled by
// lossF and rttF (1 to enter a level, the recover factors to leave one).
func (e *Estimator) classify(lossF, rttF float64) Health {
	settled, nlost, run := e.lossCounts()
	if settled == 0 {
		return HealthUnknown
	}
	t := e.cfg.Thresholds
	loss := float64(nlost) / float64(settled)
	haveRTT := e.rtt.Samples > 0
	srtt := float64(e.rtt.Smoothed)
	switch {
	case run >= t.CriticalConsecutiveLoss,
		loss >= t.CriticalLoss*lossF,
		haveRTT && srtt >= float64(t.CriticalRTT)*rttF:
		return HealthCritical
	case loss >= t.DegradedLoss*lossF,
		haveRTT && srtt >= float64(t.DegradedRTT)*rttF:
		return HealthDegraded
	}
	return HealthHealthy
}

// evaluate moves health: worse at once, better only after RecoverAcks
// consecutive acknowledged keepalives below the recover thresholds. ack
// reports that the call is an acknowledged (received) keepalive.
func (e *Estimator) evaluate(ack bool) Update {
	prev := e.health
	target := e.classify(1, 1)
	switch {
	case target == HealthUnknown:
	case prev == HealthUnknown || target > prev:
		e.health = target
		e.goodStreak = 0
	case target == prev:
		e.goodStreak = 0
	case ack:
		t := e.cfg.Thresholds
		rec := e.classify(t.RecoverLossFactor, t.RecoverRTTFactor)
		if rec >= prev {
			e.goodStreak = 0
			break
		}
		e.goodStreak++
		if e.goodStreak >= t.RecoverAcks {
			e.health = rec
			e.goodStreak = 0
		}
	}
	return Update{Health: e.health, Previous: prev, HealthChanged: e.health != prev}
}
