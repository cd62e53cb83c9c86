// Package storetest is a test suite for warren.Store implementations: the
// same checks run against MemoryStore, FileStore and etcdstore, and against
// a user's own Store.
//
// Run checks the plain Store methods; the checks of warren.VersionedStore
// (conditional writes, atomic address assignment) and warren.WatchableStore
// (the change feed) run when the store implements them.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/warrenvpn/warren"
)

// Open returns a new, empty store for one subtest. It may register cleanup
// with t.
type Open func(t *testing.T) warren.Store

// Entry returns a deterministic entry for index i, with every field set, at
// address 10.8.x.y derived from i.
func Entry(i int) warren.ClientEntry {
	var pub, wg warren.Key
	pub[0], pub[1], pub[31] = byte(i), byte(i>>8), 1
	wg[0], wg[1], wg[31] = byte(i), byte(i>>8), 2
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Add(time.Duration(i) * time.Second)
	return warren.ClientEntry{
		ClientID:    fmt.Sprintf("client-%05d", i),
		PublicKey:   pub,
		WGPublicKey: wg,
		AssignedIP:  netip.AddrFrom4([4]byte{10, 8, byte(i >> 8), byte(i)}),
		Security: &warren.ClientSecurity{
			IPAllowList:    []string{"203.0.113.0/24"},
			MaxConnections: i % 4,
			RateLimit:      &warren.RateLimit{BytesPerSec: int64(1000 + i), BurstBytes: 64},
		},
		Priority:                i % 7,
		ServerDefinedClientTags: []string{"tag"},
		Description:             fmt.Sprint("entry ", i),
		Enabled:                 i%2 == 0,
		ExpiresAt:               ts.Add(24 * time.Hour),
		CreatedAt:               ts,
		UpdatedAt:               ts,
	}
}

// Run runs the suite against stores made by open.
func Run(t *testing.T, open Open) {
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, open(t)) })
	t.Run("Versioned", func(t *testing.T) {
		vs, ok := open(t).(warren.VersionedStore)
		if !ok {
			t.Skip("not a VersionedStore")
		}
		testVersioned(t, vs)
	})
	t.Run("ConcurrentCreatesGetDistinctAddresses", func(t *testing.T) {
		vs, ok := open(t).(warren.VersionedStore)
		if !ok {
			t.Skip("not a VersionedStore")
		}
		testConcurrentCreates(t, vs)
	})
	t.Run("ConcurrentUpdatesLoseNothing", func(t *testing.T) {
		vs, ok := open(t).(warren.VersionedStore)
		if !ok {
			t.Skip("not a VersionedStore")
		}
		testConcurrentUpdates(t, vs)
	})
	t.Run("Watch", func(t *testing.T) {
		ws, ok := open(t).(warren.WatchableStore)
		if !ok {
			t.Skip("not a WatchableStore")
		}
		testWatch(t, ws)
	})
}

func testRoundTrip(t *testing.T, s warren.Store) {
	ctx := context.Background()
	got, err := s.Load(ctx)
	if err != nil || len(got) != 0 {
		t.Fatalf("Load of a new store = %v, %v; want empty", got, err)
	}
	for _, i := range []int{2, 0, 1} {
		if err := s.Put(ctx, Entry(i)); err != nil {
			t.Fatal(err)
		}
	}
	e := Entry(1)
	e.Description = "replaced"
	if err := s.Put(ctx, e); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.Delete(ctx, Entry(0).ClientID); err != nil {
			t.Fatalf("Delete (twice is not an error): %v", err)
		}
	}
	got, err = s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []warren.ClientEntry{e, Entry(2)}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Load = %+v, want %+v (sorted by ClientID)", got, want)
	}
}

func testVersioned(t *testing.T, s warren.VersionedStore) {
	ctx := context.Background()
	a, b := Entry(1), Entry(2)
	va, err := s.Create(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	vb, err := s.Create(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if va <= 0 || vb <= va {
		t.Fatalf("versions %d then %d: want positive and growing", va, vb)
	}
	if _, err := s.Create(ctx, a); !errors.Is(err, warren.ErrClientExists) {
		t.Fatalf("Create of an existing ID = %v, want ErrClientExists", err)
	}
	c := Entry(3)
	c.AssignedIP = a.AssignedIP
	if _, err := s.Create(ctx, c); !errors.Is(err, warren.ErrAddressTaken) {
		t.Fatalf("Create on a taken address = %v, want ErrAddressTaken", err)
	}
	se, err := s.Get(ctx, a.ClientID)
	if err != nil || se.Version != va || !reflect.DeepEqual(se.Entry, a) {
		t.Fatalf("Get = %+v, %v; want %+v at %d", se, err, a, va)
	}
	if _, err := s.Get(ctx, "nobody"); !errors.Is(err, warren.ErrUnknownClient) {
		t.Fatalf("Get of a missing entry = %v, want ErrUnknownClient", err)
	}

	// A conditional update commits once; the second, from the same version, conflicts.
	a2 := a
	a2.Description = "first"
	va2, err := s.Update(ctx, a2, va)
	if err != nil || va2 <= vb {
		t.Fatalf("Update = %d, %v; want a version above %d", va2, err, vb)
	}
	a3 := a
	a3.Description = "lost"
	if _, err := s.Update(ctx, a3, va); !errors.Is(err, warren.ErrConflict) {
		t.Fatalf("Update from a stale version = %v, want ErrConflict", err)
	}
	moved := a2
	moved.AssignedIP = b.AssignedIP
	if _, err := s.Update(ctx, moved, va2); !errors.Is(err, warren.ErrAddressTaken) {
		t.Fatalf("Update onto a taken address = %v, want ErrAddressTaken", err)
	}
	if _, err := s.Update(ctx, Entry(9), 1); !errors.Is(err, warren.ErrUnknownClient) {
		t.Fatalf("Update of a missing entry = %v, want ErrUnknownClient", err)
	}
	// Moving to a free address frees the old one.
	moved.AssignedIP = netip.MustParseAddr("10.8.9.9")
	vm, err := s.Update(ctx, moved, va2)
	if err != nil {
		t.Fatal(err)
	}
	c.AssignedIP = a.AssignedIP
	if _, err := s.Create(ctx, c); err != nil {
		t.Fatalf("Create on an address its holder left: %v", err)
	}

	if err := s.Remove(ctx, moved.ClientID, va2); !errors.Is(err, warren.ErrConflict) {
		t.Fatalf("Remove at a stale version = %v, want ErrConflict", err)
	}
	if err := s.Remove(ctx, moved.ClientID, vm); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, moved.ClientID, vm); !errors.Is(err, warren.ErrUnknownClient) {
		t.Fatalf("Remove of a removed entry = %v, want ErrUnknownClient", err)
	}
	// Its address is free again.
	d := Entry(4)
	d.AssignedIP = moved.AssignedIP
	if _, err := s.Create(ctx, d); err != nil {
		t.Fatalf("Create on a removed entry's address: %v", err)
	}
	// Delete frees the address too.
	if err := s.Delete(ctx, c.ClientID); err != nil {
		t.Fatal(err)
	}
	e := Entry(5)
	e.AssignedIP = c.AssignedIP
	if _, err := s.Create(ctx, e); err != nil {
		t.Fatalf("Create on a deleted entry's address: %v", err)
	}

	list, err := s.LoadVersions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, se := range list {
		ids = append(ids, se.Entry.ClientID)
		if got, err := s.Get(ctx, se.Entry.ClientID); err != nil || got.Version != se.Version {
			t.Errorf("LoadVersions says %s is at %d, Get says %d, %v", se.Entry.ClientID, se.Version, got.Version, err)
		}
	}
	if want := []string{b.ClientID, d.ClientID, e.ClientID}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("LoadVersions holds %v, want %v", ids, want)
	}
}

// testConcurrentCreates has writers race for the addresses of a small
// pool, as hubs assigning addresses do: each takes the lowest address it
// has not been refused.
func testConcurrentCreates(t *testing.T, s warren.VersionedStore) {
	ctx := context.Background()
	const writers, each = 8, 8
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				e := Entry(100 + w*each + i)
				for n := 1; ; n++ {
					e.AssignedIP = netip.AddrFrom4([4]byte{10, 9, 0, byte(n)})
					_, err := s.Create(ctx, e)
					if errors.Is(err, warren.ErrAddressTaken) {
						continue
					}
					if err != nil {
						errs <- err
					}
					break
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	list, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]string{}
	for _, e := range list {
		if other, dup := seen[e.AssignedIP]; dup {
			t.Fatalf("%s and %s both hold %s", other, e.ClientID, e.AssignedIP)
		}
		seen[e.AssignedIP] = e.ClientID
	}
	if len(list) != writers*each {
		t.Fatalf("%d entries stored, want %d", len(list), writers*each)
	}
}

// testConcurrentUpdates has writers each add one to a counter held in an
// entry with read-modify-write loops; with compare-and-swap none is lost.
func testConcurrentUpdates(t *testing.T, s warren.VersionedStore) {
	ctx := context.Background()
	e := Entry(1)
	e.Description = "0"
	if _, err := s.Create(ctx, e); err != nil {
		t.Fatal(err)
	}
	const writers, each = 6, 5
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Go(func() {
			for range each {
				for {
					se, err := s.Get(ctx, e.ClientID)
					if err != nil {
						errs <- err
						return
					}
					n, err := strconv.Atoi(se.Entry.Description)
					if err != nil {
						errs <- err
						return
					}
					se.Entry.Description = strconv.Itoa(n + 1)
					_, err = s.Update(ctx, se.Entry, se.Version)
					if errors.Is(err, warren.ErrConflict) {
						continue
					}
					if err != nil {
						errs <- err
						return
					}
					break
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	se, err := s.Get(ctx, e.ClientID)
	if err != nil {
		t.Fatal(err)
	}
	if want := strconv.Itoa(writers * each); se.Entry.Description != want {
		t.Fatalf("counter = %s after %d increments: updates were lost", se.Entry.Description, writers*each)
	}
}

// testWatch checks that a watch reports every change made after it
// started, in order, with the versions the writes returned, and that its
// channel closes when its context ends.
func testWatch(t *testing.T, s warren.WatchableStore) {
	ctx := context.Background()
	if err := s.Put(ctx, Entry(1)); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := s.Watch(wctx)
	if err != nil {
		t.Fatal(err)
	}
	e2 := Entry(2)
	e1 := Entry(1)
	e1.Description = "changed"
	if err := s.Put(ctx, e2); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, e1); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, e2.ClientID); err != nil {
		t.Fatal(err)
	}
	want := []warren.StoreEvent{
		{ClientID: e2.ClientID, Entry: e2},
		{ClientID: e1.ClientID, Entry: e1},
		{ClientID: e2.ClientID, Deleted: true},
	}
	var last int64
	for i, w := range want {
		var ev warren.StoreEvent
		select {
		case got, ok := <-ch:
			if !ok {
				t.Fatalf("watch closed after %d events", i)
			}
			ev = got
		case <-time.After(10 * time.Second):
			t.Fatalf("event %d (%+v) not delivered in 10 s", i, w)
		}
		if ev.Version <= last {
			t.Fatalf("event %d has version %d, not above %d", i, ev.Version, last)
		}
		last = ev.Version
		ev.Version = 0
		if !reflect.DeepEqual(ev, w) {
			t.Fatalf("event %d = %+v, want %+v", i, ev, w)
		}
	}
	if vs, ok := s.(warren.VersionedStore); ok {
		se, err := vs.Get(ctx, e1.ClientID)
		if err != nil {
			t.Fatal(err)
		}
		v, err := vs.Update(ctx, se.Entry, se.Version)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-ch:
			if ev.Version != v {
				t.Fatalf("watch reports version %d for an Update that returned %d", ev.Version, v)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Update not delivered in 10 s")
		}
	}
	cancel()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("watch channel still open 10 s after its context ended")
		}
	}
}
