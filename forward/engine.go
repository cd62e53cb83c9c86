// Package forward defines Engine, the seam between Warren's packet pipeline and
// whatever carries client packets onward: a kernel TUN device, a userspace NAT on
// gVisor netstack, or the testing engine that only counts.
//
// The shape follows wireguard-go's tun.Device: packets move in batches, each
// packet at an offset in its buffer (bufs[i][offset:]) with the bytes in
// front of it, the headroom, free for the callee to write a header into, so
// no layer copies a packet to make room for its own header. The callee never
// keeps a buffer it was handed after the call returns, so the caller can
// reuse its buffers for the next batch.
package forward

import (
	"log/slog"
	"net/netip"
)

// Headroom is the room the pipelines try to leave in front of each packet
// they hand to Engine.Send, and that an engine should leave in front of each
// packet it hands to Config.Deliver: enough for a TUN device's virtio-net
// header, or for a Warren session's frame or datagram header, which is then
// written in place. A packet with less headroom still works; a layer that
// needs more room than it got copies that packet.
const Headroom = 16

// Tailroom is the spare capacity an engine should leave behind each packet
// it hands to Config.Deliver: a session seals a datagram in place and needs
// room for the AEAD tag there.
const Tailroom = 16

// DeliverFunc hands a batch of IP packets, each addressed to a client, back to
// the pipeline: packet i is bufs[i][offset:]. Each bufs[i] must have a backing
// array of its own from bufs[i][0] to cap(bufs[i]): the callee may write its
// headers into bufs[i][:offset], seal the packet in place and use the spare
// capacity behind it. It does not retain bufs after it returns. It is safe
// for concurrent use.
type DeliverFunc func(bufs [][]byte, offset int)

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
	// Send takes a batch of IP packets from clients: packet i is
	// bufs[i][offset:]. Send may write into the headroom bufs[i][:offset]
	// and into the packet itself, never past len(bufs[i]). It does not
	// retain bufs after it returns. It is safe for concurrent use.
	Send(bufs [][]byte, offset int) error
	// Close stops the engine and waits for its goroutines.
	Close() error
}
