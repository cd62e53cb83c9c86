// Package tun is a forward.Engine over a kernel TUN device: packets clients
// send are written to the device and the host's own network stack routes
// them (and, with NAT, masquerades them out of an interface); packets the
// kernel routes to the tunnel subnet are read back and delivered to clients.
// A client runs the same engine with no NAT and no policy: the device holds
// the client's tunnel address, Options.Routes route further prefixes into
// it, and what the host's own sockets send there goes to the hub.
//
// The device is wireguard-go's tun package, the same one WireGuard uses: it
// moves packets in batches with headroom in front of each one, and where the
// kernel offers virtio offloads it splits TSO/USO super-packets on Read and
// coalesces TCP/UDP segments on Write (GSO/GRO), so a batch costs one system
// call per flow rather than one per packet.
//
// Addresses, MTU, links and routes are set over rtnetlink with
// github.com/vishvananda/netlink: it is the library Docker, Cilium and
// containerd use for exactly this, it has typed calls for every object we
// touch (links by name and type, addresses with IFA_F_NODAD, routes), and it
// needs no ip(8) binary on the host. NAT and the destination policy are
// nftables rules written with github.com/google/nftables, which speaks
// nf_tables netlink directly (no nft(8) binary either) and commits a whole
// table in one atomic batch. Everything lives in one table of Warren's own,
// "inet warren_<device>": Warren never reads, changes or flushes any other
// table, and deleting its table undoes all of its rules at once.
//
// The engine runs on Linux only (elsewhere Start fails with ErrUnsupported)
// and needs CAP_NET_ADMIN (root, or the capability granted to the
// binary); without it Start fails with an error that matches
// ErrNeedNetAdmin and suggests forwardingMode socket, the userspace engine
// that needs no privilege.
//
// Send hands the device the caller's buffers, the packets where they lie,
// when offloads are off. With offloads on it copies each packet into a
// 64 KiB buffer: the device's GRO coalesces a flow's segments into one
// buffer and one write, which needs room behind the packet that no
// caller's buffer has (see Engine.Send).
package tun

import (
	"errors"
	"net/netip"
	"time"
)

// Offset is the headroom left in front of each packet handed to the device:
// the virtio-net header (10 bytes) when offloads are on, rounded up the way
// wireguard-go's own device does.
const Offset = 16

// maxSegment is the largest packet Send takes when offloads are on, and
// the room of each buffer the device's GRO may coalesce segments into.
const maxSegment = 65535

// DefaultName is the device name when Options.Name is empty.
const DefaultName = "warren0"

// DefaultFwMark is the firewall mark and routing table of a full tunnel
// when Options.FwMark is zero: "WR", apart from wg-quick's 51820.
const DefaultFwMark = 0x5752

// DefaultHealthInterval is how often the rules are checked when
// Options.HealthInterval is zero.
const DefaultHealthInterval = 60 * time.Second

// ErrNeedNetAdmin is matched (errors.Is) by Start's error when the process
// lacks CAP_NET_ADMIN.
var ErrNeedNetAdmin = errors.New("forward/tun: needs CAP_NET_ADMIN (run as root or grant the capability), or use forwardingMode socket, the userspace engine that needs no privilege")

// Verdict is what a destination policy does with a destination.
type Verdict uint8

// The destination policy defaults.
const (
	// Allow lets the packet go to its destination.
	Allow Verdict = iota
	// Block drops it.
	Block
	// ForceTarget rewrites its destination address to Policy.Target (DNAT).
	ForceTarget
)

// Policy is where traffic from clients may go once it leaves the tunnel
// subnet. Its meaning is the userspace engine's: Block first (drop), then
// Allow passes untouched, then Default. With Default Allow, loopback
// destinations are still dropped unless Allow names them. With ForceTarget,
// the other address family than Target's is dropped. Traffic to the tunnel
// subnet (the hub's own address) is not governed by the policy.
type Policy struct {
	// Default applies to destinations on neither list.
	Default Verdict
	// Target is the address ForceTarget rewrites destinations to.
	Target netip.Addr
	// Allow and Block are destination prefixes; prefixes of the other
	// family than the tunnel subnet's are ignored (clients cannot send them).
	Allow, Block []netip.Prefix
}

// Options configure an Engine. The zero value is a device named warren0,
// with no NAT, no policy and the host's forwarding setting left alone.
type Options struct {
	// Name is the TUN device's name (at most 15 bytes); empty: warren0. The
	// nftables table is "inet warren_<Name>". A leftover TUN device or
	// table of that name (from a run that was killed) is replaced at Start.
	Name string
	// NAT masquerades the tunnel subnet's traffic out of NATInterface.
	NAT bool
	// NATInterface is the interface NAT masquerades out of; empty: the
	// interface of the host's default route at Start.
	NATInterface string
	// EnableForwarding turns on the host's IP forwarding for the subnet's
	// family (net.ipv4.ip_forward or net.ipv6.conf.all.forwarding) at Start
	// if it was off, and turns it back off at Close. false: left as it is.
	// A run killed before Close leaves forwarding on.
	EnableForwarding bool
	// Routes are extra prefixes routed into the device (the subnet itself is
	// always routed there). A default route (0.0.0.0/0 or ::/0) makes a
	// full tunnel: it goes into routing table FwMark with policy rules, as
	// wg-quick does (see FwMark), never into the main table. A default
	// route of the other family than the subnet's, which the device cannot
	// carry, becomes an unreachable route in that table: that family's
	// traffic fails rather than leaving outside the tunnel. Other prefixes
	// must be of the subnet's family.
	Routes []netip.Prefix
	// FwMark is the firewall mark, and the number of the routing table, of
	// a full tunnel; 0: DefaultFwMark. Sockets that must not go into the
	// tunnel (the client's own connection to the hub) carry it as SO_MARK:
	// see MarkControl. Used only when Routes hold a default route. A killed
	// run's rules and routes for the same mark are replaced at Start; the
	// net.ipv4.conf.all.src_valid_mark it turned on stays on.
	FwMark uint32
	// Policy is the destination policy as nftables rules; nil: no policy
	// rules (every destination allowed).
	Policy *Policy
	// HealthInterval is how often the engine checks that its nftables rules
	// (and a full tunnel's routing rules and routes) are all there and
	// re-applies them if not; 0: 60 s; negative: never.
	HealthInterval time.Duration
	// OnRepair, if set, is called (from the health check's goroutine) each
	// time the rules were found changed and re-applied; what says what was
	// wrong.
	OnRepair func(what string)
}
