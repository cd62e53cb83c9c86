package etcdstore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/warrenvpn/warren"
	"github.com/warrenvpn/warren/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newStore returns a Store on te under its own prefix, closed by cleanup.
func newStore(t *testing.T, te *testEtcd, prefix string) *Store {
	t.Helper()
	s, err := New(Config{Endpoints: []string{te.endpoint()}, Prefix: prefix, RequestTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStoreSuiteEtcd(t *testing.T) {
	te := startEtcd(t)
	n := 0
	storetest.Run(t, func(t *testing.T) warren.Store {
		n++
		return newStore(t, te, "/suite/"+strings.Repeat("x", n)+"/")
	})
}

// Two stores on one prefix see one registry: what one writes, the other
// reads and is told of.
func TestTwoStoresShareOneRegistry(t *testing.T) {
	te := startEtcd(t)
	a, b := newStore(t, te, "/shared/"), newStore(t, te, "/shared/")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := b.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v, err := a.Create(ctx, storetest.Entry(1))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-ch:
		if ev.ClientID != storetest.Entry(1).ClientID || ev.Version != v {
			t.Fatalf("b saw %+v, want a's create at %d", ev, v)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b was not told of a's create")
	}
	e := storetest.Entry(2)
	e.AssignedIP = storetest.Entry(1).AssignedIP
	if _, err := b.Create(ctx, e); !errors.Is(err, warren.ErrAddressTaken) {
		t.Fatalf("b creating on a's address = %v, want ErrAddressTaken", err)
	}
}

// While etcd is down a write fails within the request timeout with an
// error naming the endpoint; after a restart it succeeds, and what was
// stored before is still there.
func TestEtcdDownErrorsAreClearAndNothingIsLost(t *testing.T) {
	te := startEtcd(t)
	s := newStore(t, te, "/down/")
	ctx := context.Background()
	if _, err := s.Create(ctx, storetest.Entry(1)); err != nil {
		t.Fatal(err)
	}
	te.stop()
	start := time.Now()
	_, err := s.Create(ctx, storetest.Entry(2))
	if err == nil {
		t.Fatal("Create succeeded with etcd stopped")
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("Create took %v to fail, want about the 2 s request timeout", took)
	}
	if !strings.Contains(err.Error(), te.endpoint()) || !strings.HasPrefix(err.Error(), "etcdstore: ") {
		t.Fatalf("error %q does not name the endpoint %s", err, te.endpoint())
	}
	t.Logf("with etcd down: %v", err)
	te.start()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err = s.Create(ctx, storetest.Entry(2))
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("Create after etcd restarted: %v", err)
	}
	list, err := s.Load(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("after restart the store holds %d entries (%v), want 2", len(list), err)
	}
}

func TestNewNeedsEndpoints(t *testing.T) {
	var ce *warren.ConfigError
	if _, err := New(Config{}); !errors.As(err, &ce) || ce.Field != "endpoints" {
		t.Fatalf("New with no endpoints = %v, want a ConfigError for endpoints", err)
	}
}
