// Package forward defines Engine, the seam between Warren's packet pipeline and
// whatever carries client packets onward: a kernel TUN device, a userspace NAT on
// gVisor netstack, or the testing engine that only counts.
//
// The shape follows wireguard-go's tun.Device: packets move in batches and the
// callee never keeps a buffer it was handed after the call returns, so the
// pipeline can reuse its buffers for the next batch.
package forward

import (
	"log/slog"
	"net/netip"
)

// DeliverFunc hands a batch of IP packets, each addressed to a client, back to the
// hub's pipeline. It does not retain bufs after it returns. It is safe for
// concurrent use.
type DeliverFunc func(bufs [][]byte)

// Config is what the hub tells an engine when it starts.
type Config struct {
	// Subnet is the tunnel subnet; clients' addresses are inside it.
	Subnet netip.Prefix
	// HubIP is the hub's own tunnel address (the first host of Subnet).
	HubIP netip.Addr
	// LocalIP is the tunnel address this side owns: HubIP on the hub, the
	// assigned address on a client.
	LocalIP netip.Addr
	// MTU is the tunnel MTU.
	MTU int
	// Deliver sends packets toward clients.
	Deliver DeliverFunc
	// Logger receives the engine's logs. Never nil when the hub calls Start.
	Logger *slog.Logger
}

// Engine carries packets that clients send to destinations outside the tunnel
// subnet (or to the hub itself), and delivers replies back through Config.Deliver.
type Engine interface {
	// Start prepares the engine; packets may be delivered as soon as it returns.
	Start(cfg Config) error
	// Send takes a batch of IP packets from clients. It does not retain bufs
	// after it returns. It is safe for concurrent use.
	Send(bufs [][]byte) error
	// Close stops the engine and waits for its goroutines.
	Close() error
}
