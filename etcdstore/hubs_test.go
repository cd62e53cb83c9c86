package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenvpn/warren"
	fwdtesting "github.com/warrenvpn/warren/forward/testing"
)

// testHub is a started hub on loopback with the testing engine, its
// registry in etcd.
type testHub struct {
	*warren.Server
	store  *Store
	engine *fwdtesting.Engine
	pub    warren.Key
}

func newHub(t *testing.T, te *testEtcd, prefix string) *testHub {
	t.Helper()
	return newHubWith(t, te, prefix, nil)
}

// newHubWith is newHub with change applied to the hub's config; the test
// engine is its forwarder unless change sets a ForwardingMode (then engine
// is nil).
func newHubWith(t *testing.T, te *testEtcd, prefix string, change func(*warren.ServerConfig)) *testHub {
	t.Helper()
	kp, err := warren.GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	st := newStore(t, te, prefix)
	cfg := warren.ServerConfig{
		ListenAddr:    "127.0.0.1:0",
		PrivateKey:    kp.PrivateKey,
		PublicKey:     kp.PublicKey,
		Subnet:        netip.MustParsePrefix("10.8.0.0/22"),
		TransportMode: warren.TransportWebSocket,
		Store:         st,
	}
	if change != nil {
		change(&cfg)
	}
	var eng *fwdtesting.Engine
	if cfg.ForwardingMode == "" {
		eng = fwdtesting.New(fwdtesting.Options{})
		cfg.Forwarder = eng
	}
	srv, err := warren.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return &testHub{Server: srv, store: st, engine: eng, pub: kp.PublicKey}
}

// configFor returns b's config pointed at hub h.
func configFor(b *warren.ClientBundle, h *testHub) warren.ClientConfig {
	cfg := b.Config
	cfg.ServerURL = "wss://" + h.Addr().String()
	cfg.QUICAddr = ""
	cfg.ServerPublicKey = h.pub
	cfg.ServerCertHash = h.CertHash()
	return cfg
}

type testClient struct {
	*warren.Client
	engine *fwdtesting.Engine
	ip     netip.Addr
}

// connect connects a client with cfg; the test's cleanup closes it.
func connect(t *testing.T, cfg warren.ClientConfig) (*testClient, error) {
	t.Helper()
	eng := fwdtesting.New(fwdtesting.Options{})
	cfg.Forwarder = eng
	cfg.Reconnect.Disabled = true
	c, err := warren.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := c.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &testClient{Client: c, engine: eng, ip: info.AssignedIP.Addr()}, nil
}

// waitFor polls cond until it holds or the time is up.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sessions(h *testHub, id string) int {
	n := 0
	for _, ci := range h.ListClients() {
		if ci.ClientID == id {
			n++
		}
	}
	return n
}

// Two hubs on one etcd registry: 200 clients created at once through both
// get 200 distinct addresses, and each hub knows all 200.
func TestTwoHubsConcurrentCreatesGetDistinctAddresses(t *testing.T) {
	te := startEtcd(t)
	a, b := newHub(t, te, "/fleet/"), newHub(t, te, "/fleet/")
	ctx := context.Background()
	const n = 200
	var wg sync.WaitGroup
	ips := make([]netip.Addr, n)
	errs := make([]error, n)
	start := time.Now()
	for i := range n {
		h := a
		if i%2 == 1 {
			h = b
		}
		wg.Go(func() {
			bd, err := h.CreateClient(ctx, warren.ClientSpec{ClientID: fmt.Sprintf("c%03d", i)})
			if err != nil {
				errs[i] = err
				return
			}
			ips[i] = bd.Entry.AssignedIP
		})
	}
	wg.Wait()
	t.Logf("%d clients created through two hubs in %v", n, time.Since(start))
	seen := map[netip.Addr]int{}
	for i, ip := range ips {
		if errs[i] != nil {
			t.Fatalf("c%03d: %v", i, errs[i])
		}
		if j, dup := seen[ip]; dup {
			t.Fatalf("c%03d and c%03d both got %s", j, i, ip)
		}
		seen[ip] = i
	}
	for _, h := range []*testHub{a, b} {
		waitFor(t, 10*time.Second, "both hubs know every client", func() bool {
			return h.Status().RegisteredClients == n
		})
	}
	list, err := a.store.Load(ctx)
	if err != nil || len(list) != n {
		t.Fatalf("etcd holds %d entries (%v), want %d", len(list), err, n)
	}
}

// A client created on hub A connects to hub B; changes made on A reach B's
// live session within a second: disable drops it, enable lets it back,
// a rotated key is refused, and removal ends it.
func TestRegistryChangesOnOneHubApplyOnTheOther(t *testing.T) {
	te := startEtcd(t)
	a, b := newHub(t, te, "/fleet/"), newHub(t, te, "/fleet/")
	ctx := context.Background()
	bd, err := a.CreateClient(ctx, warren.ClientSpec{ClientID: "roamer"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := configFor(bd, b)
	var c *testClient
	waitFor(t, 5*time.Second, "the client created on A connects to B", func() bool {
		c, err = connect(t, cfg)
		return err == nil
	})
	if c.ip != bd.Entry.AssignedIP {
		t.Fatalf("B assigned %s, A's registry says %s", c.ip, bd.Entry.AssignedIP)
	}

	// An ACL set on A applies on B: packets to a blocked destination drop.
	blocked := netip.MustParseAddr("10.8.1.200")
	if _, err := a.UpdateClient(ctx, "roamer", warren.ClientUpdate{Security: &warren.ClientSecurity{DestinationBlockList: []string{blocked.String()}}}); err != nil {
		t.Fatal(err)
	}
	before := b.Statistics().Drops.ACL
	waitFor(t, 5*time.Second, "B applies A's ACL", func() bool {
		c.engine.Inject(fwdtesting.UDPPacket(netip.AddrPortFrom(c.ip, 1), netip.AddrPortFrom(blocked, 2), []byte("x")))
		time.Sleep(20 * time.Millisecond)
		return b.Statistics().Drops.ACL > before
	})

	start := time.Now()
	if err := a.DisableClient(ctx, "roamer"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "B drops the disabled client's session", func() bool { return sessions(b, "roamer") == 0 })
	took := time.Since(start)
	t.Logf("disable on A ended the session on B after %v", took)
	if took > time.Second {
		t.Errorf("disable on A took %v to reach B, want under a second", took)
	}
	if _, err := connect(t, cfg); !errors.Is(err, warren.ErrClientDisabled) {
		t.Fatalf("disabled client connecting to B: %v, want ErrClientDisabled", err)
	}

	if err := a.EnableClient(ctx, "roamer"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the re-enabled client connects to B", func() bool {
		_, err = connect(t, cfg)
		return err == nil
	})
	rot, err := a.RotateClientKey(ctx, "roamer")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "B drops the rotated client's session", func() bool { return sessions(b, "roamer") == 0 })
	if _, err := connect(t, cfg); err == nil {
		t.Fatal("B accepted the old key after rotation on A")
	}
	waitFor(t, 5*time.Second, "the new key connects to B", func() bool {
		_, err = connect(t, configFor(rot, b))
		return err == nil
	})
	if err := a.RemoveClient(ctx, "roamer"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "B drops the removed client", func() bool {
		_, gone := b.GetClient(ctx, "roamer")
		return sessions(b, "roamer") == 0 && errors.Is(gone, warren.ErrUnknownClient)
	})
}

// etcd stopped during the test: the hubs keep carrying their connected
// clients' packets, mutations fail with an error naming etcd, and after a
// restart they work again and nothing stored before is lost.
func TestHubsKeepServingWhileEtcdIsDown(t *testing.T) {
	te := startEtcd(t)
	a, b := newHub(t, te, "/fleet/"), newHub(t, te, "/fleet/")
	ctx := context.Background()
	bd, err := a.CreateClient(ctx, warren.ClientSpec{ClientID: "steady"})
	if err != nil {
		t.Fatal(err)
	}
	var c *testClient
	waitFor(t, 5*time.Second, "client connects to B", func() bool {
		c, err = connect(t, configFor(bd, b))
		return err == nil
	})
	send := func(msg string) {
		t.Helper()
		if err := c.engine.Inject(fwdtesting.UDPPacket(netip.AddrPortFrom(c.ip, 1), netip.AddrPortFrom(b.HubIP(), 2), []byte(msg))); err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		p, err := b.engine.Next(rctx)
		if err != nil {
			t.Fatalf("%s: hub B got nothing: %v", msg, err)
		}
		if _, _, payload, _ := fwdtesting.ParseUDP(p); string(payload) != msg {
			t.Fatalf("hub B got %q, want %q", payload, msg)
		}
	}
	send("before")

	te.stop()
	send("while etcd is down")
	_, err = a.CreateClient(ctx, warren.ClientSpec{ClientID: "late"})
	if err == nil || !strings.Contains(err.Error(), te.endpoint()) {
		t.Fatalf("CreateClient with etcd down = %v, want an error naming %s", err, te.endpoint())
	}
	t.Logf("CreateClient with etcd down: %v", err)
	if err := a.DisableClient(ctx, "steady"); err == nil {
		t.Fatal("DisableClient succeeded with etcd down")
	}
	if sessions(b, "steady") != 1 {
		t.Fatal("a failed DisableClient dropped the session")
	}
	send("after failed mutations")

	te.start()
	waitFor(t, 30*time.Second, "CreateClient works again after etcd restarts", func() bool {
		_, err = a.CreateClient(ctx, warren.ClientSpec{ClientID: "late"})
		return err == nil || errors.Is(err, warren.ErrClientExists)
	})
	waitFor(t, 10*time.Second, "B learns of the client created after the restart", func() bool {
		_, err := b.GetClient(ctx, "late")
		return err == nil
	})
	send("after restart")
	list, err := a.store.Load(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("etcd holds %d entries (%v) after the restart, want 2", len(list), err)
	}
	// The watch works again: a disable on A reaches B.
	if err := a.DisableClient(ctx, "steady"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "B drops the session disabled on A after the restart", func() bool { return sessions(b, "steady") == 0 })
}
