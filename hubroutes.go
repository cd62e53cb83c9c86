package warren

import (
	"context"
	"net/netip"
)

// HubRecord is how the other hubs of a fleet reach one hub: a hub-to-hub
// session is a Noise IK session (the hubs' own static keys) over WebSocket,
// dialled like a client's.
type HubRecord struct {
	// PublicKey is the hub's Noise static public key; it names the hub.
	PublicKey Key `json:"publicKey"`
	// URL is the hub's WebSocket URL ("wss://host:port").
	URL string `json:"url"`
	// CertHash pins the hub's TLS certificate, as ClientConfig.ServerCertHash.
	CertHash string `json:"certHash,omitempty"`
}

// RouteEvent is one change of a fleet's directory (RouteDirectory). Exactly
// one of Hub and Addr is set, unless Reset is.
type RouteEvent struct {
	// Reset starts a new view: forget every hub and route seen before.
	// A watch reports the whole directory after a Reset.
	Reset bool
	// Hub is a hub that joined or changed; with Deleted, one that left.
	Hub *HubRecord
	// Addr is a tunnel address now served by hub HubKey; with Deleted,
	// served by no hub.
	Addr   netip.Addr
	HubKey Key
	// Deleted marks a removal.
	Deleted bool
}

// RouteDirectory is a Store that also keeps a fleet's directory: which hubs
// there are and which hub serves each tunnel address, so that clients on
// different hubs reach each other. A Server whose Store is a RouteDirectory
// joins the fleet at Start (etcdstore implements it).
type RouteDirectory interface {
	// JoinRoutes publishes self, under a lease that RouteMember.Leave
	// ends (or that expires when the hub dies), and returns the
	// membership through which the hub publishes its routes.
	JoinRoutes(ctx context.Context, self HubRecord) (RouteMember, error)
}

// RouteMember is one hub's membership of a fleet (RouteDirectory).
type RouteMember interface {
	// PutRoute records that this hub serves addr, under the lease.
	PutRoute(ctx context.Context, addr netip.Addr) error
	// DeleteRoute removes the record of addr if it still names this hub.
	DeleteRoute(ctx context.Context, addr netip.Addr) error
	// Watch reports a Reset, every hub and route, then each change, until
	// ctx ends or the watch breaks (then the channel closes).
	Watch(ctx context.Context) (<-chan RouteEvent, error)
	// Lost is closed when the lease is lost (etcd did not hear from the
	// hub for its lifetime): the hub joins again.
	Lost() <-chan struct{}
	// Leave ends the lease: the hub's records go.
	Leave(ctx context.Context) error
}
