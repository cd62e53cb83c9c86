// Package netem is a test helper: userspace UDP and TCP proxies on loopback
// that add delay, jitter and loss between two endpoints, standing in for Linux
// tc netem where tests run without privileges. UDP datagrams are delayed and
// dropped one by one; TCP bytes are delayed per chunk read, in order, and never
// dropped (loss on a byte stream would be a bug in TCP, not a network
// condition; the kernel below the proxy retransmits).
//
// Each proxy forwards what arrives on its address to the target (the "up"
// direction) and the target's answers back (the "down" direction); a path's
// round trip gains Up.Delay + Down.Delay on average.
package netem

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// Link is what one direction of the path does to traffic.
type Link struct {
	// Delay is added to every datagram or chunk.
	Delay time.Duration
	// Jitter varies the delay uniformly in [Delay-Jitter, Delay+Jitter],
	// never below zero. UDP datagrams may then overtake each other; TCP
	// chunks keep their order.
	Jitter time.Duration
	// Loss is the probability in [0, 1] that a UDP datagram is dropped.
	// 1 cuts the direction. A TCP proxy refuses a nonzero Loss.
	Loss float64
}

func (l Link) validate(stream bool) error {
	switch {
	case l.Delay < 0 || l.Jitter < 0:
		return fmt.Errorf("netem: negative delay %v or jitter %v", l.Delay, l.Jitter)
	case !(l.Loss >= 0 && l.Loss <= 1):
		return fmt.Errorf("netem: loss %v outside [0, 1]", l.Loss)
	case stream && l.Loss != 0:
		return fmt.Errorf("netem: loss %v on a TCP proxy: bytes of a stream are not lost", l.Loss)
	}
	return nil
}

// Config is the proxy's behaviour in both directions.
type Config struct {
	// Up applies toward the target, Down toward the sender.
	Up, Down Link
	// Seed seeds the random choices, so that a test's losses repeat.
	Seed uint64
}

// shaper decides the fate of traffic under the current links.
type shaper struct {
	mu       sync.Mutex
	up, down Link
	rng      *rand.Rand
}

func newShaper(cfg Config) *shaper {
	return &shaper{up: cfg.Up, down: cfg.Down, rng: rand.New(rand.NewPCG(cfg.Seed, 0x6e6574656d))}
}

func (s *shaper) set(up, down Link) {
	s.mu.Lock()
	s.up, s.down = up, down
	s.mu.Unlock()
}

// fate returns the delay for one datagram or chunk, or drop.
func (s *shaper) fate(up bool) (delay time.Duration, drop bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.down
	if up {
		l = s.up
	}
	if l.Loss > 0 && s.rng.Float64() < l.Loss {
		return 0, true
	}
	delay = l.Delay
	if l.Jitter > 0 {
		delay += time.Duration(s.rng.Int64N(int64(2*l.Jitter)+1)) - l.Jitter
	}
	return max(delay, 0), false
}

// item is one datagram due at a time.
type item struct {
	at    time.Time
	seq   uint64
	data  []byte
	write func([]byte)
}

type itemHeap []item

func (h itemHeap) Len() int { return len(h) }
func (h itemHeap) Less(i, j int) bool {
	if h[i].at.Equal(h[j].at) {
		return h[i].seq < h[j].seq
	}
	return h[i].at.Before(h[j].at)
}
func (h itemHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *itemHeap) Push(x any)   { *h = append(*h, x.(item)) }
func (h *itemHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

// scheduler delivers datagrams at their due times from one goroutine.
type scheduler struct {
	mu   sync.Mutex
	h    itemHeap
	seq  uint64
	kick chan struct{}
	done chan struct{}
}

func newScheduler() *scheduler {
	return &scheduler{kick: make(chan struct{}, 1), done: make(chan struct{})}
}

func (s *scheduler) add(at time.Time, data []byte, write func([]byte)) {
	s.mu.Lock()
	s.seq++
	heap.Push(&s.h, item{at: at, seq: s.seq, data: data, write: write})
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// run delivers until done is closed.
func (s *scheduler) run() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.mu.Lock()
		var due []item
		now := time.Now()
		for len(s.h) > 0 && !s.h[0].at.After(now) {
			due = append(due, heap.Pop(&s.h).(item))
		}
		wait := time.Hour
		if len(s.h) > 0 {
			wait = s.h[0].at.Sub(now)
		}
		s.mu.Unlock()
		for _, it := range due {
			it.write(it.data)
		}
		timer.Reset(wait)
		select {
		case <-s.done:
			return
		case <-s.kick:
		case <-timer.C:
		}
	}
}
