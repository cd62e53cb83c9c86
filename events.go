package warren

import (
	"sync"
	"sync/atomic"
	"time"
)

// Event is something that happened to a Server or Client. The concrete types are
// ClientConnected, ClientDisconnected, StatusChanged, Error, Reconnected and
// LinkHealthChanged.
type Event interface {
	// Time is when the event happened.
	Time() time.Time
}

// EventTime is embedded in every event.
type EventTime struct{ At time.Time }

// Time returns when the event happened.
func (e EventTime) Time() time.Time { return e.At }

// ClientConnected: a client completed its handshake and has a live session.
type ClientConnected struct {
	EventTime
	Info ClientInfo
}

// ClientDisconnected: a client's session ended.
type ClientDisconnected struct {
	EventTime
	ClientID string
	// Reason says why, for people.
	Reason string
	// Err says why for programs: it matches (errors.Is) a sentinel such as
	// ErrClientDisabled, ErrKeyRotated, ErrKicked or ErrServerShutdown when
	// the hub said so or the session saw it (ErrDeadPeer).
	Err error
}

// StatusChanged: the Server's or Client's status changed.
type StatusChanged struct {
	EventTime
	Status Status
}

// Error: something failed that no API call returned (a listener, a session).
type Error struct {
	EventTime
	Err error
}

// Reconnected: a Client re-established its session after losing it.
type Reconnected struct {
	EventTime
	Info ConnectInfo
}

// eventBufferSize is each subscriber's queue; a reader that falls further
// behind loses events, counted in Statistics.EventsDropped.
const eventBufferSize = 256

// broker fans events out to subscribers without ever blocking the publisher.
type broker struct {
	mu      sync.Mutex
	subs    map[chan Event]struct{}
	closed  bool
	dropped atomic.Uint64
}

func (b *broker) subscribe() (<-chan Event, func()) {
	ch := make(chan Event, eventBufferSize)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		close(ch)
		return ch, func() {}
	}
	if b.subs == nil {
		b.subs = make(map[chan Event]struct{})
	}
	b.subs[ch] = struct{}{}
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if _, ok := b.subs[ch]; ok {
				delete(b.subs, ch)
				close(ch)
			}
		})
	}
}

func (b *broker) publish(e Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- e:
		default:
			b.dropped.Add(1)
		}
	}
}

// close ends every subscription: their channels are closed.
func (b *broker) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for ch := range b.subs {
		close(ch)
		delete(b.subs, ch)
	}
}
