package preauth

import (
	"net/netip"
	"slices"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorder collects the names of evicted entries in order.
type recorder []string

func (r *recorder) add(b *Budget, name string, src string) *Entry {
	var a netip.Addr
	if src != "" {
		a = netip.MustParseAddr(src)
	}
	return b.Add(a, func() { *r = append(*r, name) })
}

func TestFullBudgetEvictsOldestSilentFirst(t *testing.T) {
	var r recorder
	b := New(3, 10)
	e1 := r.add(b, "1", "192.0.2.1")
	r.add(b, "2", "192.0.2.2")
	r.add(b, "3", "192.0.2.3")
	if !b.Active(e1) {
		t.Fatal("Active(e1) = false")
	}
	r.add(b, "4", "192.0.2.4") // evicts 2: the oldest silent one
	r.add(b, "5", "192.0.2.5") // evicts 3
	if want := []string{"2", "3"}; !slices.Equal(r, want) {
		t.Fatalf("evicted %v, want %v", r, want)
	}
	// All silent ones but the newcomer gone: the oldest active one goes.
	e6 := r.add(b, "6", "192.0.2.6") // evicts 4
	b.Active(e6)
	r.add(b, "7", "192.0.2.7") // evicts 5, the last silent one but the newcomer
	r.add(b, "8", "192.0.2.8") // silent: 7; active: 1, 6 → evicts 7
	if want := []string{"2", "3", "4", "5", "7"}; !slices.Equal(r, want) {
		t.Fatalf("evicted %v, want %v", r, want)
	}
	// Silent: 8; active: 1, 6. An entry of unknown source counts too.
	b.Active(r.add(b, "9", "")) // evicts 8
	if want := []string{"2", "3", "4", "5", "7", "8"}; !slices.Equal(r, want) {
		t.Fatalf("evicted %v, want %v", r, want)
	}
	if b.Evicted(e1) {
		t.Error("Evicted(e1) = true while silent entries were left")
	}
	// Only the newcomer is silent: the oldest active entry goes.
	r.add(b, "10", "192.0.2.10")
	if want := []string{"2", "3", "4", "5", "7", "8", "1"}; !slices.Equal(r, want) {
		t.Fatalf("evicted %v, want %v", r, want)
	}
	if !b.Evicted(e1) || b.Len() != 3 {
		t.Errorf("Evicted(e1) = %v, Len = %d; want true, 3", b.Evicted(e1), b.Len())
	}
}

func TestNewcomerEvictsOldestActiveWhenNoSilentLeft(t *testing.T) {
	var r recorder
	b := New(2, 10)
	b.Active(r.add(b, "1", "192.0.2.1"))
	b.Active(r.add(b, "2", "192.0.2.2"))
	e3 := r.add(b, "3", "192.0.2.3")
	if want := []string{"1"}; !slices.Equal(r, want) {
		t.Fatalf("evicted %v, want %v", r, want)
	}
	if !b.Remove(e3) || b.Remove(e3) {
		t.Error("Remove: want true once, then false")
	}
	if b.Len() != 1 {
		t.Errorf("Len = %d, want 1", b.Len())
	}
}

func TestPerSourceBoundEvictsWithinThatSource(t *testing.T) {
	var r recorder
	b := New(100, 2)
	r.add(b, "a1", "192.0.2.1")
	r.add(b, "b1", "192.0.2.2")
	r.add(b, "a2", "192.0.2.1")
	r.add(b, "a3", "192.0.2.1") // evicts a1, not b1
	if want := []string{"a1"}; !slices.Equal(r, want) {
		t.Fatalf("evicted %v, want %v", r, want)
	}
	// IPv6 sources count per /64.
	r.add(b, "v1", "2001:db8::1")
	r.add(b, "v2", "2001:db8::2")
	r.add(b, "v3", "2001:db8::3:3") // same /64: evicts v1
	r.add(b, "w1", "2001:db8:0:1::1")
	if want := []string{"a1", "v1"}; !slices.Equal(r, want) {
		t.Fatalf("evicted %v, want %v", r, want)
	}
	// A source learnt later (PROXY header) is bounded too.
	late := r.add(b, "late", "")
	if !b.SetSource(late, netip.MustParseAddr("192.0.2.1")) {
		t.Fatal("SetSource = false")
	}
	if want := []string{"a1", "v1", "a2"}; !slices.Equal(r, want) {
		t.Fatalf("evicted %v, want %v", r, want)
	}
	if got := b.Sources(); got != 4 {
		t.Errorf("Sources = %d, want 4", got)
	}
}

func TestRemovedEntriesFreeTheirSource(t *testing.T) {
	b := New(10, 10)
	var es []*Entry
	for range 5 {
		es = append(es, b.Add(netip.MustParseAddr("192.0.2.1"), func() {}))
	}
	for _, e := range es {
		b.Remove(e)
	}
	if b.Len() != 0 || b.Sources() != 0 {
		t.Errorf("Len = %d, Sources = %d after removing everything", b.Len(), b.Sources())
	}
	if b.Active(es[0]) || b.SetSource(es[0], netip.MustParseAddr("192.0.2.2")) {
		t.Error("Active or SetSource on a removed entry reported true")
	}
}
