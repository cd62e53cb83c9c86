package warren

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// bundleFor returns b's config pointed at hub h.
func bundleFor(b *ClientBundle, h *testHub) *ClientBundle {
	c := *b
	c.Config.ServerURL = "wss://" + h.Addr().String()
	c.Config.QUICAddr = ""
	c.Config.Transport = ClientWebSocket
	c.Config.ServerPublicKey = h.cfg.PublicKey
	c.Config.ServerCertHash = h.CertHash()
	return &c
}

// Two hubs sharing one MemoryStore: what one changes, the other applies to
// its live sessions.
func TestHubsSharingAStoreFollowEachOther(t *testing.T) {
	st := NewMemoryStore()
	a := newTestHub(t, func(c *ServerConfig) { c.Store = st })
	b := newTestHub(t, func(c *ServerConfig) { c.Store = st })
	ctx := context.Background()

	// Concurrent creates through both get distinct addresses.
	var wg sync.WaitGroup
	ips := make([]netip.Addr, 40)
	for i := range ips {
		h := a
		if i%2 == 1 {
			h = b
		}
		wg.Go(func() {
			bd, err := h.CreateClient(ctx, ClientSpec{ClientID: fmt.Sprintf("c%02d", i)})
			if err != nil {
				t.Error(err)
				return
			}
			ips[i] = bd.Entry.AssignedIP
		})
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for i, ip := range ips {
		if seen[ip] {
			t.Fatalf("c%02d got %s, already assigned", i, ip)
		}
		seen[ip] = true
	}

	bd, err := a.CreateClient(ctx, ClientSpec{ClientID: "roamer"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "B knows the client created on A", func() bool {
		_, err := b.GetClient(ctx, "roamer")
		return err == nil
	})
	connectBundle(t, bundleFor(bd, b))
	if err := a.DisableClient(ctx, "roamer"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "B drops the session of the client disabled on A", func() bool { return sessionsOf(b.Server, "roamer") == 0 })
}

// versionedOnly hides a store's Watch: a hub on it never hears of other
// hubs' changes, so its snapshot goes stale.
type versionedOnly struct{ VersionedStore }

// A hub whose view is stale does not undo another hub's change: its
// conditional write conflicts, it retries on the stored entry, and it
// applies what it learned (a rotated key ends its sessions).
func TestStaleHubMutationKeepsOtherHubsChange(t *testing.T) {
	st := NewMemoryStore()
	a := newTestHub(t, func(c *ServerConfig) { c.Store = versionedOnly{st} })
	b := newTestHub(t, func(c *ServerConfig) { c.Store = st })
	ctx := context.Background()
	bd, err := a.CreateClient(ctx, ClientSpec{ClientID: "roamer"})
	if err != nil {
		t.Fatal(err)
	}
	connectBundle(t, bd)
	waitFor(t, 5*time.Second, "B knows the client", func() bool {
		_, err := b.GetClient(ctx, "roamer")
		return err == nil
	})
	rot, err := b.RotateClientKey(ctx, "roamer")
	if err != nil {
		t.Fatal(err)
	}
	desc := "changed on A"
	e, err := a.UpdateClient(ctx, "roamer", ClientUpdate{Description: &desc})
	if err != nil {
		t.Fatal(err)
	}
	if e.PublicKey != rot.Entry.PublicKey || e.Description != desc {
		t.Fatalf("A's update stored key %v description %q; want B's rotated key and A's description", e.PublicKey, e.Description)
	}
	stored, err := st.Get(ctx, "roamer")
	if err != nil || stored.Entry.PublicKey != rot.Entry.PublicKey {
		t.Fatalf("the store holds %+v, %v: A undid B's rotation", stored, err)
	}
	waitFor(t, 5*time.Second, "A ends the session of the old key", func() bool { return sessionsOf(a.Server, "roamer") == 0 })
	if err := a.RemoveClient(ctx, "roamer"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(ctx, "roamer"); !errors.Is(err, ErrUnknownClient) {
		t.Fatalf("after RemoveClient on the stale hub the store still has it: %v", err)
	}
}
