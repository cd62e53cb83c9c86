package warren

import (
	"github.com/warrenvpn/warren/forward"

	"context"
	"sync"
	"sync/atomic"
)

// Priority QoS (DESIGN §4): the hub's egress toward its forwarding engine is
// shared by every client, so that is where ClientSpec.Priority acts.
//
// The scheduler is deficit round robin (DRR) with weight priority+1, chosen
// over strict priority because DRR needs no anti-starvation floor to tune:
// every client with packets waiting is served each round, in proportion to
// its weight, at O(1) per packet. Under contention — the engine is still
// taking the last batch when the next arrives — clients' packets wait in
// per-client queues and each round a client may send up to
// egressQuantum×(priority+1) bytes. So among clients that all have packets
// waiting, client i gets the share (pᵢ+1)/Σ(pⱼ+1) of the bytes: priority 7
// against priority 0 is 8:1 (89 % and 11 %), two equal priorities split
// evenly, and a priority-0 client among n priority-7 ones still gets
// 1/(8n+1). A client that sends less than its share is never queued behind
// the others' excess. Without contention there is no queue: the batch goes
// to the engine from the session's own goroutine, as it would without QoS.
//
// Toward clients there is no shared queue to schedule: each session has its
// own bounded send queue and writer, and the engine's delivery into them
// never blocks, so one client's backlog cannot delay another's.

const (
	// egressQuantum is the bytes a priority-0 client may send per DRR round.
	egressQuantum = 1500
	// egressQueuePackets bounds each client's egress queue; beyond it
	// packets are dropped, counted in Drops.QueueFull.
	egressQueuePackets = 128
	// egressBatch bounds the packets handed to the engine in one Send.
	egressBatch = 64
)

// egress schedules the packets clients send toward the engine.
type egress struct {
	srv  *Server
	kick chan struct{}

	mu     sync.Mutex
	busy   bool           // an engine Send is under way
	active []*clientState // clients with packets waiting, in round order

	// Owned by the drain loop.
	batch  [][]byte
	owners []*clientState
}

// egressQueue is one client's queue toward the engine; egress.mu guards
// all but prio.
type egressQueue struct {
	prio    atomic.Int32
	ring    [][]byte
	head, n int
	free    [][]byte
	deficit int
	active  bool
}

func (q *egressQueue) setPriority(p int) { q.prio.Store(int32(p)) }

func (e *egress) init(s *Server) {
	e.srv = s
	e.kick = make(chan struct{}, 1)
}

// send hands a batch of packets from cs (nil for none), bufs[i][offset:],
// to the engine: at once when nothing is waiting and the engine is free,
// otherwise by copying them, with forward.Headroom in front, into cs's
// queue for the drain loop.
func (e *egress) send(cs *clientState, bufs [][]byte, offset int) {
	if len(bufs) == 0 {
		return
	}
	e.mu.Lock()
	if cs == nil || (!e.busy && len(e.active) == 0) {
		e.busy = true
		e.mu.Unlock()
		if err := e.srv.engine.Send(bufs, offset); err != nil {
			e.srv.log.Debug("engine send failed", "err", err)
		}
		e.mu.Lock()
		e.busy = false
		if len(e.active) > 0 {
			e.signal()
		}
		e.mu.Unlock()
		return
	}
	q := &cs.eg
	var full uint64
	for _, p := range bufs {
		if q.n == egressQueuePackets {
			full++
			continue
		}
		if q.ring == nil {
			q.ring = make([][]byte, egressQueuePackets)
		}
		var b []byte
		if k := len(q.free); k > 0 {
			b = q.free[k-1][:0]
			q.free[k-1] = nil
			q.free = q.free[:k-1]
		}
		b = append(b, noHeadroom[:]...)
		q.ring[(q.head+q.n)%egressQueuePackets] = append(b, p[offset:]...)
		q.n++
	}
	if q.n > 0 && !q.active {
		q.active = true
		e.active = append(e.active, cs)
	}
	e.signal()
	e.mu.Unlock()
	addNonZero(&e.srv.stats.queueFull, full)
}

func (e *egress) signal() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// run drains the queues, one DRR round per engine Send, until ctx ends.
func (e *egress) run(ctx context.Context) {
	defer e.srv.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.kick:
		}
		e.mu.Lock()
		for len(e.active) > 0 && !e.busy {
			e.busy = true
			e.roundLocked()
			e.mu.Unlock()
			if err := e.srv.engine.Send(e.batch, forward.Headroom); err != nil {
				e.srv.log.Debug("engine send failed", "err", err)
			}
			e.mu.Lock()
			for i, b := range e.batch {
				q := &e.owners[i].eg
				q.free = append(q.free, b)
			}
			clear(e.batch)
			clear(e.owners)
			e.batch, e.owners = e.batch[:0], e.owners[:0]
			e.busy = false
			if ctx.Err() != nil {
				break
			}
		}
		e.mu.Unlock()
	}
}

// roundLocked fills e.batch with one DRR round: each waiting client adds
// egressQuantum×(priority+1) to its deficit and sends packets while the
// deficit covers them. A client whose queue empties leaves the round and
// keeps no deficit.
func (e *egress) roundLocked() {
	for i := 0; i < len(e.active) && len(e.batch) < egressBatch; {
		cs := e.active[i]
		q := &cs.eg
		q.deficit += egressQuantum * int(q.prio.Load()+1)
		for q.n > 0 && len(e.batch) < egressBatch {
			p := q.ring[q.head]
			if n := len(p) - forward.Headroom; n > q.deficit {
				break
			} else {
				q.deficit -= n
			}
			q.ring[q.head] = nil
			q.head = (q.head + 1) % egressQueuePackets
			q.n--
			e.batch = append(e.batch, p)
			e.owners = append(e.owners, cs)
		}
		if q.n == 0 {
			q.deficit = 0
			q.active = false
			e.active = append(e.active[:i], e.active[i+1:]...)
			continue
		}
		i++
	}
	// Rotate, so a round cut short by egressBatch starts next time with
	// the clients it did not reach.
	if len(e.active) > 1 && len(e.batch) >= egressBatch {
		first := e.active[0]
		copy(e.active, e.active[1:])
		e.active[len(e.active)-1] = first
	}
}
