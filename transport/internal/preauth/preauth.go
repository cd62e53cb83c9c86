// Package preauth bounds the connections a listener holds before they have
// proved anything: in total and per source, closing the oldest to make room
// for a new one instead of refusing it. A listener that stops accepting when a
// bound is reached lets a few hundred idle sockets lock every client out; one
// that closes the oldest idle connection always lets a new client in, and
// gives every connection at least as long as the budget takes to fill.
//
// Entries that have not sent anything yet are closed before entries that
// have: a silent connection is the cheapest one for an attacker to hold, and
// a client in the middle of its handshake is the one worth keeping.
package preauth

import (
	"container/list"
	"net/netip"
	"sync"
)

// Budget holds entries, each one connection, oldest first. Its methods are
// safe for concurrent use.
type Budget struct {
	max       int
	perSource int

	mu     sync.Mutex
	silent list.List // of *Entry: nothing received yet, oldest first
	active list.List // of *Entry: something received, oldest first
	bySrc  map[netip.Prefix]*list.List
}

// Entry is one connection in a Budget.
type Entry struct {
	close func() // called once, outside the lock, when the entry is evicted

	// Guarded by the Budget's mu.
	in      bool
	active  bool
	evicted bool
	hasSrc  bool
	src     netip.Prefix
	elem    *list.Element // in silent or active
	srcElem *list.Element // in bySrc[src]
}

// New returns a Budget of at most max entries in total and perSource entries
// from one source (see SourceKey). Both must be at least 1.
func New(max, perSource int) *Budget {
	return &Budget{max: max, perSource: perSource, bySrc: make(map[netip.Prefix]*list.List)}
}

// SourceKey is what entries are counted per: an IPv4 address, or the /64 an
// IPv6 address is in, since one host commonly holds a whole /64.
func SourceKey(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}

// Add admits a new connection from src (an invalid Addr if its source is not
// known yet, as behind a PROXY protocol header: it then counts in the total
// only until SetSource). When a bound is full it first evicts the oldest
// silent entry (of that source, or in all), else the oldest active one, and
// calls that entry's close; the new entry itself is never the one evicted.
// close must be safe to call while the connection is in use.
func (b *Budget) Add(src netip.Addr, close func()) *Entry {
	e := &Entry{close: close}
	b.mu.Lock()
	e.in = true
	e.elem = b.silent.PushBack(e)
	var victims []*Entry
	if src.IsValid() {
		victims = b.setSourceLocked(e, src, victims)
	}
	for b.silent.Len()+b.active.Len() > b.max {
		victims = append(victims, b.evictLocked(b.oldestExcept(e)))
	}
	b.mu.Unlock()
	closeAll(victims)
	return e
}

// SetSource sets the source of an entry added with an unknown one, evicting
// the oldest entry of that source if it is full. It reports false if e has
// been evicted or removed.
func (b *Budget) SetSource(e *Entry, src netip.Addr) bool {
	b.mu.Lock()
	if !e.in {
		b.mu.Unlock()
		return false
	}
	var victims []*Entry
	if !e.hasSrc {
		victims = b.setSourceLocked(e, src, nil)
	}
	b.mu.Unlock()
	closeAll(victims)
	return true
}

// Active marks e as having received its first bytes, which makes it the last
// to be evicted. It reports false if e has been evicted or removed.
func (b *Budget) Active(e *Entry) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !e.in {
		return false
	}
	if !e.active {
		b.silent.Remove(e.elem)
		e.elem = b.active.PushBack(e)
		e.active = true
	}
	return true
}

// Remove takes e out of the budget: its connection has been handed on or
// closed. It reports false if e had been evicted (or removed) already.
// Calling it more than once is harmless.
func (b *Budget) Remove(e *Entry) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !e.in {
		return false
	}
	b.unlinkLocked(e)
	return true
}

// Evicted reports whether e was closed to make room for another entry.
func (b *Budget) Evicted(e *Entry) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return e.evicted
}

// Len returns the number of entries.
func (b *Budget) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.silent.Len() + b.active.Len()
}

// Sources returns the number of sources with entries.
func (b *Budget) Sources() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.bySrc)
}

func (b *Budget) setSourceLocked(e *Entry, src netip.Addr, victims []*Entry) []*Entry {
	key := SourceKey(src)
	l := b.bySrc[key]
	if l == nil {
		l = list.New()
		b.bySrc[key] = l
	}
	e.hasSrc, e.src = true, key
	e.srcElem = l.PushBack(e)
	for l.Len() > b.perSource {
		victims = append(victims, b.evictLocked(oldestOfSource(l, e)))
	}
	return victims
}

// oldestOfSource returns the oldest silent entry of a source list other than
// except, else its oldest entry. The list holds at most perSource+1 entries,
// so the scan is short.
func oldestOfSource(l *list.List, except *Entry) *Entry {
	for el := l.Front(); el != nil; el = el.Next() {
		if e := el.Value.(*Entry); !e.active && e != except {
			return e
		}
	}
	return l.Front().Value.(*Entry)
}

// oldestExcept returns the oldest silent entry other than except, else the
// oldest active one.
func (b *Budget) oldestExcept(except *Entry) *Entry {
	if el := b.silent.Front(); el != nil && el.Value.(*Entry) != except {
		return el.Value.(*Entry)
	}
	if el := b.active.Front(); el != nil {
		return el.Value.(*Entry)
	}
	// Only except is left, which max >= 1 rules out.
	return except
}

func (b *Budget) evictLocked(e *Entry) *Entry {
	b.unlinkLocked(e)
	e.evicted = true
	return e
}

func (b *Budget) unlinkLocked(e *Entry) {
	if e.active {
		b.active.Remove(e.elem)
	} else {
		b.silent.Remove(e.elem)
	}
	if e.hasSrc {
		l := b.bySrc[e.src]
		l.Remove(e.srcElem)
		if l.Len() == 0 {
			delete(b.bySrc, e.src)
		}
	}
	e.in = false
	e.elem, e.srcElem = nil, nil
}

func closeAll(victims []*Entry) {
	for _, e := range victims {
		e.close()
	}
}
