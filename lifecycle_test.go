package warren

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/warrenvpn/warren/codec"
	fwdtesting "github.com/warrenvpn/warren/forward/testing"
)

// reconnectingClient connects a new client of h with fast reconnects and
// returns it with a subscription to its events.
func reconnectingClient(t *testing.T, h *testHub, id string, tr ClientTransport) (*Client, <-chan Event) {
	t.Helper()
	b, err := h.CreateClient(context.Background(), ClientSpec{ClientID: id, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := withTransport(b.Config, tr)
	cfg.Reconnect = ReconnectConfig{InitialBackoffMs: 20, MaxBackoffMs: 50}
	cfg.Forwarder = fwdtesting.New(fwdtesting.Options{})
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	events, cancel := c.Subscribe()
	t.Cleanup(cancel)
	ctx, cancelc := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelc()
	if _, err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	return c, events
}

func disconnectedEvent(t *testing.T, events <-chan Event) ClientDisconnected {
	t.Helper()
	return waitEvent(t, events, func(e Event) bool { _, ok := e.(ClientDisconnected); return ok }).(ClientDisconnected)
}

// TestDisconnectReasonTextDoesNotDecide: the words of DisconnectClient's
// reason are for people; the code says "kicked", so the client comes back.
func TestDisconnectReasonTextDoesNotDecide(t *testing.T) {
	for _, tr := range []ClientTransport{ClientWebSocket, ClientQUIC} {
		t.Run(string(tr), func(t *testing.T) {
			h := newTestHub(t, nil)
			c, events := reconnectingClient(t, h, "alice", tr)
			if err := h.DisconnectClient("alice", "client disabled for maintenance"); err != nil {
				t.Fatal(err)
			}
			d := disconnectedEvent(t, events)
			if !errors.Is(d.Err, ErrKicked) || !strings.Contains(d.Reason, "client disabled for maintenance") {
				t.Fatalf("ClientDisconnected{Reason: %q, Err: %v}, want ErrKicked with the hub's words", d.Reason, d.Err)
			}
			waitEvent(t, events, func(e Event) bool { _, ok := e.(Reconnected); return ok })
			waitFor(t, 5*time.Second, "alice connected again", func() bool {
				return c.Status() == StatusConnected && len(h.ListClients()) == 1
			})
		})
	}
}

// TestPermanentDisconnectStopsReconnecting: a client the hub ends for good
// learns why (errors.Is on the event's Err) and makes no further attempt.
func TestPermanentDisconnectStopsReconnecting(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		do   func(*testHub) error
		want error
	}{
		{"disable", func(h *testHub) error { return h.DisableClient(ctx, "alice") }, ErrClientDisabled},
		{"rotate", func(h *testHub) error { _, err := h.RotateClientKey(ctx, "alice"); return err }, ErrKeyRotated},
		{"remove", func(h *testHub) error { return h.RemoveClient(ctx, "alice") }, ErrClientRemoved},
		{"expire", func(h *testHub) error {
			past := time.Now().Add(-time.Second)
			_, err := h.UpdateClient(ctx, "alice", ClientUpdate{ExpiresAt: &past})
			return err
		}, ErrClientExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHub(t, nil)
			hubEvents, cancel := h.Subscribe()
			defer cancel()
			c, events := reconnectingClient(t, h, "alice", ClientWebSocket)
			before := h.Statistics()
			if err := tc.do(h); err != nil {
				t.Fatal(err)
			}
			d := disconnectedEvent(t, events)
			if !errors.Is(d.Err, tc.want) {
				t.Fatalf("client's ClientDisconnected{Reason: %q, Err: %v}, want %v", d.Reason, d.Err, tc.want)
			}
			hd := disconnectedEvent(t, hubEvents)
			if !errors.Is(hd.Err, tc.want) {
				t.Fatalf("hub's ClientDisconnected{Reason: %q, Err: %v}, want %v", hd.Reason, hd.Err, tc.want)
			}
			// What must hold is an absence: no attempt in 50 backoffs.
			time.Sleep(time.Second)
			after := h.Statistics()
			if n := after.Handshakes + after.HandshakesFailed - before.Handshakes - before.HandshakesFailed; n != 0 || c.Status() != StatusDisconnected {
				t.Fatalf("%d handshakes after the hub ended the client for good; status %v", n, c.Status())
			}
		})
	}
}

// TestRefusedConnectNamesTheCause: a hub that refuses a known client at the
// handshake says why, and Connect's error matches the cause.
func TestRefusedConnectNamesTheCause(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := newTestHub(t, nil)
	for _, tc := range []struct {
		id   string
		sec  *ClientSecurity
		prep func(id string) error
		want error
	}{
		{"disabled", nil, func(id string) error { return h.DisableClient(ctx, id) }, ErrClientDisabled},
		{"expired", nil, func(id string) error {
			past := time.Now().Add(-time.Second)
			_, err := h.UpdateClient(ctx, id, ClientUpdate{ExpiresAt: &past})
			return err
		}, ErrClientExpired},
		{"blocked", &ClientSecurity{IPBlockList: []string{"127.0.0.0/8"}}, func(string) error { return nil }, ErrClientRefused},
	} {
		b, err := h.CreateClient(ctx, ClientSpec{ClientID: tc.id, Security: tc.sec, ExpiresAt: time.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if err := tc.prep(tc.id); err != nil {
			t.Fatal(err)
		}
		c, _, err := startClient(b.Config)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Connect(ctx)
		c.Close()
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: Connect: %v, want %v", tc.id, err, tc.want)
		}
		code, ok := disconnectCode(err)
		if !ok || !permanentCode(code) {
			t.Errorf("%s: Connect's error carries code %v (%v): a reconnect would try again", tc.id, code, ok)
		}
	}
}

// TestHubSeesClientDisconnectAsPeerClosed: a client's Disconnect reaches the
// hub with its code.
func TestHubSeesClientDisconnectAsPeerClosed(t *testing.T) {
	h := newTestHub(t, nil)
	a := h.newClient(t, "alice", nil)
	events, cancel := h.Subscribe()
	defer cancel()
	if err := a.Disconnect(); err != nil {
		t.Fatal(err)
	}
	d := disconnectedEvent(t, events)
	if !errors.Is(d.Err, ErrPeerClosed) {
		t.Fatalf("hub's ClientDisconnected{Reason: %q, Err: %v}, want ErrPeerClosed", d.Reason, d.Err)
	}
}

// TestDisconnectCodesDecideReconnect: the reconnect policy per code, and a
// code from a newer peer (or none at all) counts as unspecified: transient.
func TestDisconnectCodesDecideReconnect(t *testing.T) {
	permanent := map[codec.DisconnectCode]error{
		codec.DisconnectDisabled:   ErrClientDisabled,
		codec.DisconnectKeyRotated: ErrKeyRotated,
		codec.DisconnectExpired:    ErrClientExpired,
		codec.DisconnectRemoved:    ErrClientRemoved,
		codec.DisconnectRefused:    ErrClientRefused,
		codec.DisconnectReplaced:   ErrSessionReplaced,
	}
	transient := map[codec.DisconnectCode]error{
		codec.DisconnectShuttingDown:    ErrServerShutdown,
		codec.DisconnectKicked:          ErrKicked,
		codec.DisconnectDeadPeer:        ErrDeadPeer,
		codec.DisconnectProtocolError:   ErrProtocol,
		codec.DisconnectConnectionLimit: ErrConnectionLimit,
		codec.DisconnectClosed:          ErrPeerClosed,
	}
	for code := codec.DisconnectCode(0); code.Known(); code++ {
		want, perm := permanent[code]
		if !perm {
			want = transient[code]
		}
		if want == nil && code != codec.DisconnectUnspecified {
			t.Errorf("code %v has no sentinel in this test", code)
		}
		r := parseDisconnect(codec.AppendDisconnect(nil, code, "words"))
		if r.code != code || r.text != "words" || permanentCode(code) != perm {
			t.Errorf("code %v: parsed %+v, permanent %v, want %v", code, r, permanentCode(code), perm)
		}
		if got := errors.Unwrap(r.err()); got != want {
			t.Errorf("code %v: error unwraps to %v, want %v", code, got, want)
		}
	}
	for _, p := range [][]byte{nil, {200, 'n', 'e', 'w'}, {byte(codec.DisconnectClosed) + 1}} {
		r := parseDisconnect(p)
		if r.code != codec.DisconnectUnspecified || permanentCode(r.code) || errors.Unwrap(r.err()) != nil {
			t.Errorf("payload %v: %+v, want unspecified and transient", p, r)
		}
	}
}
