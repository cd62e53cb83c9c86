package etcdstore

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/warrenvpn/warren"
)

// nextEvent returns the next fleet event, failing after a while.
func nextEvent(t *testing.T, ch <-chan warren.RouteEvent) warren.RouteEvent {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("fleet watch closed")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no fleet event")
	}
	return warren.RouteEvent{}
}

// The directory: a watch reports a Reset, then hubs and routes; a route
// deleted by a hub it no longer names stays; leaving removes the hub's
// records.
func TestRouteDirectory(t *testing.T) {
	te := startEtcd(t)
	st := newStore(t, te, "/dir/")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	keyA, _ := warren.GenerateKeypair()
	keyB, _ := warren.GenerateKeypair()
	recA := warren.HubRecord{PublicKey: keyA.PublicKey, URL: "wss://a.example:443", CertHash: "ha"}
	recB := warren.HubRecord{PublicKey: keyB.PublicKey, URL: "wss://b.example:443"}
	ma, err := st.JoinRoutes(ctx, recA)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := st.JoinRoutes(ctx, recB)
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Leave(ctx)
	ip := netip.MustParseAddr("10.8.0.9")
	if err := ma.PutRoute(ctx, ip); err != nil {
		t.Fatal(err)
	}
	ch, err := mb.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, ch); !ev.Reset {
		t.Fatalf("first event %+v, want a Reset", ev)
	}
	hubs := map[warren.Key]warren.HubRecord{}
	var route warren.RouteEvent
	for range 3 {
		ev := nextEvent(t, ch)
		switch {
		case ev.Hub != nil:
			hubs[ev.Hub.PublicKey] = *ev.Hub
		case ev.Addr.IsValid():
			route = ev
		}
	}
	if hubs[recA.PublicKey] != recA || hubs[recB.PublicKey] != recB {
		t.Fatalf("hubs %+v", hubs)
	}
	if route.Addr != ip || route.HubKey != recA.PublicKey {
		t.Fatalf("route %+v, want %s on A", route, ip)
	}

	// The client moves to B; A's late withdrawal leaves B's route.
	if err := mb.PutRoute(ctx, ip); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, ch); ev.Addr != ip || ev.HubKey != recB.PublicKey || ev.Deleted {
		t.Fatalf("event %+v, want %s on B", ev, ip)
	}
	if err := ma.DeleteRoute(ctx, ip); err != nil {
		t.Fatal(err)
	}
	resp, err := st.cli.Get(ctx, st.routeKey(ip))
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != st.hubKey(recB.PublicKey)[len(st.hubsPrefix()):] {
		t.Fatalf("route after A's withdrawal: %v %v", resp, err)
	}

	// A leaves: its hub record goes.
	if err := ma.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, ch); ev.Hub == nil || !ev.Deleted || *ev.Hub != recA {
		t.Fatalf("event %+v, want hub A gone", ev)
	}
	// B withdraws its route.
	if err := mb.DeleteRoute(ctx, ip); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, ch); ev.Addr != ip || !ev.Deleted {
		t.Fatalf("event %+v, want %s withdrawn", ev, ip)
	}
}
