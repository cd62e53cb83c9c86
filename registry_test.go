package warren

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// gateStore is a MemoryStore whose writes can be held at a gate or made to
// fail: a disk that is slow or full.
type gateStore struct {
	*MemoryStore

	mu      sync.Mutex
	gate    chan struct{} // when set, Put waits until it is closed
	entered chan struct{} // gets a value as each Put reaches the gate
	fail    error         // when set, Put and Delete return it
}

func newGateStore() *gateStore { return &gateStore{MemoryStore: NewMemoryStore()} }

// hold makes every Put wait for gate; entered reports each Put that waits.
func (g *gateStore) hold(gate chan struct{}) (entered <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gate, g.entered = gate, make(chan struct{}, 16)
	return g.entered
}

// failWith makes every Put and Delete return err; nil heals the store.
func (g *gateStore) failWith(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.fail = err
}

// wait applies the gate and the failure to one write.
func (g *gateStore) wait(ctx context.Context) error {
	g.mu.Lock()
	gate, entered, fail := g.gate, g.entered, g.fail
	g.mu.Unlock()
	if fail != nil {
		return fail
	}
	if gate != nil {
		entered <- struct{}{}
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// failOnly applies only the failure (deletes are not held at the gate).
func (g *gateStore) failOnly() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.fail
}

func (g *gateStore) Put(ctx context.Context, e ClientEntry) error {
	if err := g.wait(ctx); err != nil {
		return err
	}
	return g.MemoryStore.Put(ctx, e)
}

func (g *gateStore) Create(ctx context.Context, e ClientEntry) (int64, error) {
	if err := g.wait(ctx); err != nil {
		return 0, err
	}
	return g.MemoryStore.Create(ctx, e)
}

func (g *gateStore) Update(ctx context.Context, e ClientEntry, version int64) (int64, error) {
	if err := g.wait(ctx); err != nil {
		return 0, err
	}
	return g.MemoryStore.Update(ctx, e, version)
}

func (g *gateStore) Delete(ctx context.Context, id string) error {
	if err := g.failOnly(); err != nil {
		return err
	}
	return g.MemoryStore.Delete(ctx, id)
}

func (g *gateStore) Remove(ctx context.Context, id string, version int64) error {
	if err := g.failOnly(); err != nil {
		return err
	}
	return g.MemoryStore.Remove(ctx, id, version)
}

// A handshake reads the registry without waiting for a writer's store I/O:
// while CreateClient of one client is stuck in Store.Put, another client
// connects over WebSocket and the registry's readers answer.
func TestHandshakeDoesNotWaitForStoreWrite(t *testing.T) {
	ctx := context.Background()
	st := newGateStore()
	h := newTestHub(t, func(c *ServerConfig) { c.Store = st })
	alice, err := h.CreateClient(ctx, ClientSpec{ClientID: "alice"})
	if err != nil {
		t.Fatal(err)
	}

	gate := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release) // before the hub closes, whatever fails below
	entered := st.hold(gate)
	created := make(chan error, 1)
	go func() {
		_, err := h.CreateClient(ctx, ClientSpec{ClientID: "bob"})
		created <- err
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("CreateClient never reached Store.Put")
	}

	c := connectBundle(t, alice) // fails after 10 s if the handshake waits for the Put
	if n := sessionsOf(h.Server, "alice"); n != 1 {
		t.Fatalf("alice has %d sessions, want 1", n)
	}
	var registered int
	within(t, 10*time.Second, "Status while a Put is blocked", func() { registered = h.Status().RegisteredClients })
	if registered != 1 {
		t.Fatalf("Status counts %d registered clients while bob's Put is blocked, want 1", registered)
	}
	var aliceErr error
	within(t, 10*time.Second, "GetClient while a Put is blocked", func() { _, aliceErr = h.GetClient(ctx, "alice") })
	if aliceErr != nil {
		t.Fatal(aliceErr)
	}
	if _, err := h.GetClient(ctx, "bob"); !errors.Is(err, ErrUnknownClient) {
		t.Fatalf("bob is visible before his store write finished: %v", err)
	}

	release()
	if err := <-created; err != nil {
		t.Fatalf("CreateClient bob: %v", err)
	}
	if _, err := h.GetClient(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := c.engine.Inject(udp(c.ip, h.hubIP, "still here")); err != nil {
		t.Fatal(err)
	}
}

// Many goroutines creating clients at once get distinct addresses, and the
// store on disk holds exactly what the registry holds.
func TestConcurrentCreateClientHandsOutDistinctAddresses(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.json")
	store, err := NewFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := serverConfig(t, "10.9.0.0/24")
	cfg.Store = store
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	const workers, each = 8, 6
	bundles := make(chan *ClientBundle, workers*each)
	errs := make(chan error, workers*each)
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Add(1)
	go func() { // a reader racing the writers, for -race
		defer readers.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = s.Status()
			list, _ := s.ListRegisteredClients(ctx)
			for _, e := range list {
				if re, ok := s.reg.lookupKey(e.PublicKey); !ok || re.entry.ClientID != e.ClientID {
					errs <- fmt.Errorf("listed client %s not found by its key", e.ClientID)
					return
				}
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				b, err := s.CreateClient(ctx, ClientSpec{ClientID: fmt.Sprintf("w%d-c%d", w, i)})
				if err != nil {
					errs <- err
					return
				}
				bundles <- b
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	close(bundles)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	byIP := map[netip.Addr]string{}
	for b := range bundles {
		if other, dup := byIP[b.Entry.AssignedIP]; dup {
			t.Fatalf("%s and %s were both given %v", other, b.Entry.ClientID, b.Entry.AssignedIP)
		}
		byIP[b.Entry.AssignedIP] = b.Entry.ClientID
		if !s.cfg.Subnet.Contains(b.Entry.AssignedIP) || s.checkAddr(b.Entry.AssignedIP) != "" {
			t.Fatalf("%s was given %v", b.Entry.ClientID, b.Entry.AssignedIP)
		}
	}
	if len(byIP) != workers*each {
		t.Fatalf("%d clients created, want %d", len(byIP), workers*each)
	}

	type row struct {
		ID      string
		IP      netip.Addr
		Key, WG Key
	}
	rows := func(list []ClientEntry) []row {
		out := make([]row, 0, len(list))
		for _, e := range list {
			out = append(out, row{e.ClientID, e.AssignedIP, e.PublicKey, e.WGPublicKey})
		}
		slices.SortFunc(out, func(a, b row) int { return strings.Compare(a.ID, b.ID) })
		return out
	}
	list, _ := s.ListRegisteredClients(ctx)
	reopened, err := NewFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	onDisk, err := reopened.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := rows(onDisk), rows(list); !reflect.DeepEqual(got, want) {
		t.Fatalf("store and registry differ:\nstore    %v\nregistry %v", got, want)
	}
	if len(list) != workers*each {
		t.Fatalf("registry holds %d clients, want %d", len(list), workers*each)
	}
}

// A writer whose store write fails changes nothing in memory: the registry,
// its lookups and the live sessions are as before, and a failed create frees
// the address it would have taken.
func TestFailedStoreWriteChangesNothing(t *testing.T) {
	ctx := context.Background()
	st := newGateStore()
	h := newTestHub(t, func(c *ServerConfig) { c.Store = st })
	alice := h.newClient(t, "alice", nil)
	if _, err := h.CreateClient(ctx, ClientSpec{ClientID: "carol"}); err != nil {
		t.Fatal(err)
	}
	if err := h.DisableClient(ctx, "carol"); err != nil {
		t.Fatal(err)
	}

	type state struct {
		Registry   []ClientEntry
		Stored     []ClientEntry
		Registered int
		AliceByKey string
	}
	snapshot := func() state {
		list, err := h.ListRegisteredClients(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stored, err := st.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var byKey string
		if re, ok := h.reg.lookupKey(alice.bundle.Entry.PublicKey); ok {
			byKey = re.entry.ClientID
		}
		return state{list, stored, h.Status().RegisteredClients, byKey}
	}
	before := snapshot()
	if before.AliceByKey != "alice" || before.Registered != 2 {
		t.Fatalf("setup: %+v", before)
	}

	errDisk := errors.New("disk full")
	st.failWith(errDisk)
	desc := "changed"
	cases := []struct {
		name string
		op   func() error
	}{
		{"CreateClient", func() error {
			_, err := h.CreateClient(ctx, ClientSpec{ClientID: "bob"})
			return err
		}},
		{"UpdateClient", func() error {
			_, err := h.UpdateClient(ctx, "alice", ClientUpdate{
				Description: &desc,
				Security:    &ClientSecurity{DestinationBlockList: []string{"0.0.0.0/0"}},
			})
			return err
		}},
		{"DisableClient", func() error { return h.DisableClient(ctx, "alice") }},
		{"EnableClient", func() error { return h.EnableClient(ctx, "carol") }},
		{"RotateClientKey", func() error {
			_, err := h.RotateClientKey(ctx, "alice")
			return err
		}},
		{"RemoveClient", func() error { return h.RemoveClient(ctx, "alice") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.op(); !errors.Is(err, errDisk) {
				t.Fatalf("err %v, want the store's error", err)
			}
			if after := snapshot(); !reflect.DeepEqual(before, after) {
				t.Fatalf("a failed store write changed the registry:\nbefore %+v\nafter  %+v", before, after)
			}
			if n := sessionsOf(h.Server, "alice"); n != 1 {
				t.Fatalf("alice has %d sessions after a failed %s, want 1", n, tc.name)
			}
		})
	}

	st.failWith(nil)
	b, err := h.CreateClient(ctx, ClientSpec{ClientID: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	// alice .2, carol .3: the failed create of bob left .4 free.
	if want := netip.MustParseAddr("10.8.0.4"); b.Entry.AssignedIP != want {
		t.Fatalf("bob got %v, want %v", b.Entry.AssignedIP, want)
	}
	// alice's session still carries traffic under her old security.
	if err := alice.engine.Inject(udp(alice.ip, netip.MustParseAddr("192.0.2.1"), "after")); err != nil {
		t.Fatal(err)
	}
	if _, err := nextFrom(t, h.engine, alice.ip, 10*time.Second); err != nil {
		t.Fatalf("alice's packet did not reach the hub's engine: %v", err)
	}
}

// A lookup by key, the handshake's read of the registry, does not allocate.
func TestRegistryLookupDoesNotAllocate(t *testing.T) {
	s, keys := registryWithClients(t, 16)
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		if _, ok := s.reg.lookupKey(keys[i%len(keys)]); !ok {
			t.Fatal("registered key not found")
		}
		i++
	})
	if allocs != 0 {
		t.Fatalf("lookupKey allocates %v times per call", allocs)
	}
}

// registryWithClients returns a hub (not started) with n clients and their keys.
func registryWithClients(tb testing.TB, n int) (*Server, []Key) {
	tb.Helper()
	s, err := NewServer(serverConfig(tb, "10.64.0.0/16"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	keys := make([]Key, n)
	for i := range keys {
		b, err := s.CreateClient(context.Background(), ClientSpec{ClientID: fmt.Sprint("c", i)})
		if err != nil {
			tb.Fatal(err)
		}
		keys[i] = b.Entry.PublicKey
	}
	return s, keys
}

// BenchmarkRegistryLookup measures the handshake's registry read: alone, from
// every core at once, and from every core while a writer updates clients
// through a store whose every write takes 1 ms (an fsync).
func BenchmarkRegistryLookup(b *testing.B) {
	s, keys := registryWithClients(b, 1000)
	lookup := func(i int) {
		if _, ok := s.reg.lookupKey(keys[i%len(keys)]); !ok {
			b.Fatal("registered key not found")
		}
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			lookup(i)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				lookup(i)
			}
		})
	})
	b.Run("parallel-while-writing", func(b *testing.B) {
		s.store = slowStore{s.store, time.Millisecond}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			desc := ""
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				desc = fmt.Sprint(i)
				if _, err := s.UpdateClient(context.Background(), "c0", ClientUpdate{Description: &desc}); err != nil {
					panic(err)
				}
			}
		})
		defer wg.Wait()
		defer close(stop)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				lookup(i)
			}
		})
	})
}

// slowStore is a Store whose writes take d, like a disk's fsync.
type slowStore struct {
	Store
	d time.Duration
}

func (s slowStore) Put(ctx context.Context, e ClientEntry) error {
	time.Sleep(s.d)
	return s.Store.Put(ctx, e)
}

// Of several UpdateClient calls racing, the one the registry keeps is the
// one whose security the client's live session enforces.
func TestConcurrentUpdatesLeaveSessionsWithRegistrySecurity(t *testing.T) {
	ctx := context.Background()
	h := newTestHub(t, nil)
	h.newClient(t, "alice", nil)
	for round := range 20 {
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				sec := &ClientSecurity{DestinationBlockList: []string{fmt.Sprintf("192.0.2.%d", round*4+w)}}
				if _, err := h.UpdateClient(ctx, "alice", ClientUpdate{Security: sec}); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		re, _ := h.reg.lookupID("alice")
		for _, ss := range h.clientSessions("alice") {
			if got := ss.sec.Load(); got != re.sec {
				t.Fatalf("round %d: the session enforces %v, the registry holds %v", round, got, re.entry.Security.DestinationBlockList)
			}
		}
	}
}
