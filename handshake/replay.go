package handshake

import (
	"fmt"
	"sync"
)

// The replay window is a ring of 64-bit blocks (RFC 6479). One block is the
// redundancy that lets the window slide a block at a time, so the window
// covers every block but one.
const (
	blockBitLog = 6                            // a block holds 1<<6 = 64 counters
	blockBits   = 1 << blockBitLog             // counters per block
	ringBlocks  = 1 << 7                       // blocks in the ring: 128, a power of two
	windowSize  = (ringBlocks - 1) * blockBits // counters behind the newest that are still judged: 8128
	blockMask   = ringBlocks - 1               // block number to ring index
	bitMask     = blockBits - 1                // counter to bit within its block
)

// A ReplayWindow remembers which datagram counters a session has received,
// as in RFC 6479 and WireGuard: it accepts each counter once, in any order,
// as long as it is no more than 8128 behind the greatest counter accepted,
// and refuses counters from [MaxMessages] on.
//
// Check a counter only after its datagram has authenticated, so forged
// packets cannot move the window. The zero value is ready to use. A
// ReplayWindow is not safe for concurrent use.
type ReplayWindow struct {
	last uint64 // greatest counter accepted
	ring [ringBlocks]uint64
}

// Accept reports whether counter is new, and records it if so. It returns
// false for a counter already accepted, one too far behind the window, or one
// at or above [MaxMessages].
func (w *ReplayWindow) Accept(counter uint64) bool {
	if counter >= MaxMessages {
		return false
	}
	block := counter >> blockBitLog
	if counter > w.last {
		// Slide forward, clearing the blocks the window moves onto.
		current := w.last >> blockBitLog
		diff := min(block-current, ringBlocks)
		for i := current + 1; i <= current+diff; i++ {
			w.ring[i&blockMask] = 0
		}
		w.last = counter
	} else if w.last-counter > windowSize {
		return false
	}
	idx := block & blockMask
	bit := uint64(1) << (counter & bitMask)
	old := w.ring[idx]
	w.ring[idx] = old | bit
	return old&bit == 0
}

// Reset forgets every counter, for a new session.
func (w *ReplayWindow) Reset() {
	*w = ReplayWindow{}
}

// A TimestampGuard keeps the greatest [ClientHello] timestamp accepted per
// client key, so a recorded handshake message 1 cannot be replayed (Noise IK's
// first message is otherwise replayable). It holds one entry per key it has
// seen; call Forget when a client is removed. The zero value is ready to use,
// and a TimestampGuard is safe for concurrent use.
type TimestampGuard struct {
	mu   sync.Mutex
	last map[[32]byte]int64
}

// Check records ts for key if it is greater than every timestamp accepted for
// key before, and otherwise returns an error wrapping [ErrReplay].
func (g *TimestampGuard) Check(key [32]byte, ts int64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if prev, ok := g.last[key]; ok && ts <= prev {
		return fmt.Errorf("%w: client hello timestamp %d is not after %d", ErrReplay, ts, prev)
	}
	if g.last == nil {
		g.last = make(map[[32]byte]int64)
	}
	g.last[key] = ts
	return nil
}

// Forget drops what the guard knows about key.
func (g *TimestampGuard) Forget(key [32]byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.last, key)
}
