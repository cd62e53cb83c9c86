package etcdstore

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/warrenvpn/warren"
	fwdtesting "github.com/warrenvpn/warren/forward/testing"
)

// newFleetHub starts a hub named hubID on cfg's store (Endpoints or Client
// to fill in by the caller, Prefix "/fleet/").
func newFleetHub(t *testing.T, cfg Config) *testHub {
	t.Helper()
	cfg.Prefix = "/fleet/"
	cfg.RequestTimeout = 2 * time.Second
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = 2 * time.Second
	}
	st, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	kp, err := warren.GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	eng := fwdtesting.New(fwdtesting.Options{})
	srv, err := warren.NewServer(warren.ServerConfig{
		ListenAddr:    "127.0.0.1:0",
		PrivateKey:    kp.PrivateKey,
		PublicKey:     kp.PublicKey,
		Subnet:        netip.MustParsePrefix("10.8.0.0/22"),
		TransportMode: warren.TransportWebSocket,
		Store:         st,
		Forwarder:     eng,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return &testHub{Server: srv, store: st, engine: eng, pub: kp.PublicKey}
}

// fleetSessions returns h's listed sessions of a client, by hub ID.
func fleetSessions(h *testHub, id string) map[string]int {
	out := map[string]int{}
	for _, ci := range h.ListClients() {
		if ci.ClientID == id {
			out[ci.HubID]++
		}
	}
	return out
}

// connectTo connects the client of bundle b to hub h, retrying until h's
// registry has it.
func connectTo(t *testing.T, b *warren.ClientBundle, h *testHub) *testClient {
	t.Helper()
	var c *testClient
	var err error
	waitFor(t, 10*time.Second, "client "+b.Entry.ClientID+" connects", func() bool {
		c, err = connect(t, configFor(b, h))
		return err == nil
	})
	return c
}

func create(t *testing.T, h *testHub, id string) *warren.ClientBundle {
	t.Helper()
	b, err := h.CreateClient(context.Background(), warren.ClientSpec{ClientID: id})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A client on hub A and another on hub B: ListClients on either hub shows
// both, each with the hub that serves it.
func TestFleetListClientsShowsEveryHubsSessions(t *testing.T) {
	te := startEtcd(t)
	a := newFleetHub(t, Config{Endpoints: []string{te.endpoint()}, HubID: "hub-a"})
	b := newFleetHub(t, Config{Endpoints: []string{te.endpoint()}, HubID: "hub-b"})
	ba, bb := create(t, a, "on-a"), create(t, a, "on-b")
	connectTo(t, ba, a)
	connectTo(t, bb, b)
	for _, h := range []*testHub{a, b} {
		waitFor(t, 5*time.Second, "each hub lists both sessions with their hubs", func() bool {
			sa, sb := fleetSessions(h, "on-a"), fleetSessions(h, "on-b")
			return len(sa) == 1 && sa["hub-a"] == 1 && len(sb) == 1 && sb["hub-b"] == 1
		})
	}
	for _, ci := range b.ListClients() {
		if ci.ClientID == "on-a" && ci.AssignedIP != ba.Entry.AssignedIP {
			t.Fatalf("B lists on-a at %s, want %s", ci.AssignedIP, ba.Entry.AssignedIP)
		}
	}
	// A session that ends leaves every hub's list.
	if err := a.DisconnectClient("on-a", "test"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "B no longer lists the ended session", func() bool { return len(fleetSessions(b, "on-a")) == 0 })
}

// A hub that dies (here: its etcd client closed, so its lease is no longer
// kept alive) leaves no records: B stops listing its session within the
// lease's TTL.
func TestFleetRecordsVanishWhenHubLosesEtcd(t *testing.T) {
	te := startEtcd(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{te.endpoint()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	a := newFleetHub(t, Config{Client: cli, HubID: "hub-a"})
	b := newFleetHub(t, Config{Endpoints: []string{te.endpoint()}, HubID: "hub-b"})
	connectTo(t, create(t, a, "on-a"), a)
	waitFor(t, 5*time.Second, "B lists A's session", func() bool { return fleetSessions(b, "on-a")["hub-a"] == 1 })
	cli.Close()
	start := time.Now()
	waitFor(t, 15*time.Second, "B drops the dead hub's session", func() bool { return len(fleetSessions(b, "on-a")) == 0 })
	t.Logf("B stopped listing A's session %v after A lost etcd (session TTL 2 s)", time.Since(start))
	if fleetSessions(a, "on-a")["hub-a"] != 1 {
		t.Fatal("A's session ended with its etcd client")
	}
}

// Revoking a live hub's lease deletes its records at once; the hub takes a
// new lease and writes them again, and B lists the session again.
func TestFleetRevokedLeaseIsReplacedAndRecordsRewritten(t *testing.T) {
	te := startEtcd(t)
	a := newFleetHub(t, Config{Endpoints: []string{te.endpoint()}, HubID: "hub-a"})
	b := newFleetHub(t, Config{Endpoints: []string{te.endpoint()}, HubID: "hub-b"})
	connectTo(t, create(t, a, "on-a"), a)
	waitFor(t, 5*time.Second, "B lists A's session", func() bool { return fleetSessions(b, "on-a")["hub-a"] == 1 })

	ctx := context.Background()
	cli := b.store.Client()
	resp, err := cli.Get(ctx, "/fleet/sessions/hub-a/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("A's records in etcd: %v, %v; want one", resp, err)
	}
	key, lease := string(resp.Kvs[0].Key), clientv3.LeaseID(resp.Kvs[0].Lease)
	if lease == 0 {
		t.Fatal("A's record has no lease")
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := cli.Watch(wctx, key, clientv3.WithRev(resp.Header.Revision+1))
	if _, err := cli.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	var deleted, rewritten bool
	timeout := time.After(15 * time.Second)
	for !rewritten {
		select {
		case wr := <-wch:
			for _, ev := range wr.Events {
				switch {
				case ev.Type == mvccpb.DELETE:
					deleted = true
				case deleted && ev.Kv.Lease != 0 && clientv3.LeaseID(ev.Kv.Lease) != lease:
					rewritten = true
				}
			}
		case <-timeout:
			t.Fatalf("after the revoke: deleted %v, rewritten under a new lease %v", deleted, rewritten)
		}
	}
	waitFor(t, 5*time.Second, "B lists A's session again", func() bool { return fleetSessions(b, "on-a")["hub-a"] == 1 })
}

// maxConnections 1 across hubs, replace-oldest: a client on A that
// connects to B keeps only its session on B; A ends its own.
func TestFleetMaxConnectionsReplacesSessionOnOtherHub(t *testing.T) {
	te := startEtcd(t)
	a := newFleetHub(t, Config{Endpoints: []string{te.endpoint()}, HubID: "hub-a"})
	b := newFleetHub(t, Config{Endpoints: []string{te.endpoint()}, HubID: "hub-b"})
	bd := create(t, a, "roamer")
	c1 := connectTo(t, bd, a)
	waitFor(t, 5*time.Second, "B lists the session on A", func() bool { return fleetSessions(b, "roamer")["hub-a"] == 1 })
	c2 := connectTo(t, bd, b)
	start := time.Now()
	for _, h := range []*testHub{a, b} {
		waitFor(t, 5*time.Second, "only the session on B is left, on both hubs' lists", func() bool {
			s := fleetSessions(h, "roamer")
			return len(s) == 1 && s["hub-b"] == 1
		})
	}
	t.Logf("A ended its session %v after the client connected to B", time.Since(start))
	waitFor(t, 5*time.Second, "the client's session on A ends", func() bool { return c1.Status() != warren.StatusConnected })
	if c2.Status() != warren.StatusConnected {
		t.Fatalf("the newer session on B is %s", c2.Status())
	}

	// With maxConnections 2 both hubs keep one each.
	two := 2
	if _, err := b.UpdateClient(context.Background(), "roamer", warren.ClientUpdate{Security: &warren.ClientSecurity{MaxConnections: two}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "A learns of maxConnections 2", func() bool {
		e, err := a.GetClient(context.Background(), "roamer")
		return err == nil && e.Security != nil && e.Security.MaxConnections == two
	})
	connectTo(t, bd, a)
	for _, h := range []*testHub{a, b} {
		waitFor(t, 5*time.Second, "one session on each hub", func() bool {
			s := fleetSessions(h, "roamer")
			return s["hub-a"] == 1 && s["hub-b"] == 1
		})
	}
	if c2.Status() != warren.StatusConnected {
		t.Fatalf("with maxConnections 2 the session on B is %s", c2.Status())
	}
}

// Two sessions of one client (maxConnections 1) that start at the same
// moment on two hubs: both start, and once the hubs see each other's
// records exactly one is left, and both hubs agree which.
func TestFleetMaxConnectionsConcurrentConnectsLeaveOne(t *testing.T) {
	te := startEtcd(t)
	a := newFleetHub(t, Config{Endpoints: []string{te.endpoint()}, HubID: "hub-a"})
	b := newFleetHub(t, Config{Endpoints: []string{te.endpoint()}, HubID: "hub-b"})
	bd := create(t, a, "twin")
	waitFor(t, 5*time.Second, "B knows the client", func() bool {
		_, err := b.GetClient(context.Background(), "twin")
		return err == nil
	})
	var wg sync.WaitGroup
	for _, h := range []*testHub{a, b} {
		wg.Go(func() {
			if _, err := connect(t, configFor(bd, h)); err != nil {
				t.Errorf("connecting: %v", err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	var hub string
	waitFor(t, 5*time.Second, "one session is left, on both hubs' lists", func() bool {
		sa, sb := fleetSessions(a, "twin"), fleetSessions(b, "twin")
		if len(sa) != 1 || len(sb) != 1 {
			return false
		}
		for k, n := range sa {
			hub = k
			return n == 1 && sb[k] == 1
		}
		return false
	})
	t.Logf("the session left is on %s", hub)
}

// With etcd down a client still connects (its record is written in the
// background, never on the handshake), and its record reaches the other
// hubs once etcd is back.
func TestFleetSessionStartsWhileEtcdIsDownAndRecordCatchesUp(t *testing.T) {
	te := startEtcd(t)
	a := newFleetHub(t, Config{Endpoints: []string{te.endpoint()}, HubID: "hub-a"})
	b := newFleetHub(t, Config{Endpoints: []string{te.endpoint()}, HubID: "hub-b"})
	bd := create(t, a, "late")
	te.stop()
	start := time.Now()
	if _, err := connect(t, configFor(bd, a)); err != nil {
		t.Fatalf("connecting with etcd down: %v", err)
	}
	t.Logf("connected with etcd down in %v", time.Since(start))
	if s := fleetSessions(a, "late"); s["hub-a"] != 1 {
		t.Fatalf("A lists %v with etcd down, want its own session", s)
	}
	te.start()
	waitFor(t, 30*time.Second, "B lists the session once etcd is back", func() bool { return fleetSessions(b, "late")["hub-a"] == 1 })
}

// A Store serves one hub of the fleet: a second hub started on it is
// refused with an error that says so, and starts once the first is closed.
func TestFleetSecondHubOnOneStoreIsRefused(t *testing.T) {
	te := startEtcd(t)
	a := newFleetHub(t, Config{Endpoints: []string{te.endpoint()}, HubID: "hub-a"})
	kp, err := warren.GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := warren.NewServer(warren.ServerConfig{
		ListenAddr:    "127.0.0.1:0",
		PrivateKey:    kp.PrivateKey,
		PublicKey:     kp.PublicKey,
		Subnet:        netip.MustParsePrefix("10.8.0.0/22"),
		TransportMode: warren.TransportWebSocket,
		Store:         a.store,
		Forwarder:     fwdtesting.New(fwdtesting.Options{}),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	err = srv.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "own Store") {
		t.Fatalf("second hub on one Store: Start = %v, want a refusal naming the cause", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatalf("after the first hub closed: %v", err)
	}
}
