package warren

import (
	"fmt"
	"net/netip"
	"strings"

	"go4.org/netipx"
)

// Destination policy defaults.
const (
	PolicyAllow       = "allow"
	PolicyBlock       = "block"
	PolicyForceTarget = "forceTarget"
)

// verdict is what the destination policy decides for one destination.
type verdict uint8

const (
	verdictAllow verdict = iota
	verdictBlock
	verdictForce
)

// compiledPolicy is a DestinationPolicy compiled once into IP sets.
//
// It governs traffic that leaves the tunnel: destinations outside the subnet.
// Traffic between clients and to the hub's own address is governed by the
// clients' ACLs, since rewriting it (forceTarget) would make no sense.
//
// Order: the block list first, then the allow list passes untouched, then the
// default. Loopback destinations reach services on the hub's own host, so they
// are refused unless the allow list names them (or forceTarget points there):
// a client must never reach the hub's localhost by accident.
type compiledPolicy struct {
	def          verdict
	target       netip.Addr
	allow, block *netipx.IPSet
}

// compilePolicy validates and compiles p; nil compiles to allow-all.
func compilePolicy(p *DestinationPolicy) (*compiledPolicy, error) {
	if p == nil {
		p = &DestinationPolicy{}
	}
	cp := &compiledPolicy{def: verdictAllow}
	switch p.Default {
	case "", PolicyAllow:
	case PolicyBlock:
		cp.def = verdictBlock
	case PolicyForceTarget:
		cp.def = verdictForce
		t, err := netip.ParseAddr(strings.TrimSpace(p.Target))
		if err != nil {
			return nil, configErr("destinationPolicy.target", p.Target, "forceTarget needs an IP address to rewrite destinations to")
		}
		cp.target = t.Unmap()
	default:
		return nil, configErr("destinationPolicy.default", p.Default, "must be allow, block or forceTarget")
	}
	if p.Target != "" && cp.def != verdictForce {
		return nil, configErr("destinationPolicy.target", p.Target, "only used with default forceTarget")
	}
	var err error
	if cp.allow, err = compileList("destinationPolicy.allowList", p.AllowList); err != nil {
		return nil, err
	}
	if cp.block, err = compileList("destinationPolicy.blockList", p.BlockList); err != nil {
		return nil, err
	}
	return cp, nil
}

// checkTarget refuses a forceTarget the engine could never use for a hub on
// subnet: the policy governs traffic leaving the tunnel, so the target must
// be outside the subnet (not the hub's own address, nor a client's), of the
// family the clients send (a rewrite keeps the packet's family), and an
// address one can open a flow to.
func (p *compiledPolicy) checkTarget(subnet netip.Prefix) error {
	if p.def != verdictForce {
		return nil
	}
	t := p.target
	fam, other := "IPv4", "IPv6"
	if subnet.Addr().Is6() {
		fam, other = other, fam
	}
	var why string
	switch {
	case t.Is4() != subnet.Addr().Is4():
		why = fmt.Sprintf("is %s, but clients on %s send %s only: no destination could be rewritten to it", other, subnet, fam)
	case t == subnet.Addr().Next():
		why = "is the hub's own tunnel address; forceTarget redirects traffic that leaves the tunnel (serve it with Server.Listen instead)"
	case subnet.Contains(t):
		why = "is inside the tunnel subnet " + subnet.String() + "; forceTarget redirects traffic that leaves the tunnel"
	case t.IsUnspecified() || t.IsMulticast() || t == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		why = "is not an address a flow can be sent to"
	}
	if why != "" {
		return configErr("destinationPolicy.target", t.String(), why)
	}
	return nil
}

// decide returns the verdict for a destination and, for verdictForce, the
// address to send to instead.
func (p *compiledPolicy) decide(dst netip.Addr) (verdict, netip.Addr) {
	dst = dst.Unmap()
	switch {
	case p.block.Contains(dst):
		return verdictBlock, dst
	case p.allow.Contains(dst):
		return verdictAllow, dst
	case p.def == verdictForce:
		if p.target.Is4() != dst.Is4() {
			// A v4 target cannot stand in for a v6 destination, or back.
			return verdictBlock, dst
		}
		return verdictForce, p.target
	case p.def == verdictBlock || dst.IsLoopback():
		return verdictBlock, dst
	}
	return verdictAllow, dst
}

// rewrite maps a flow's destination through the policy: the address to dial
// and whether the flow may go at all. The netstack engine calls it per flow.
func (p *compiledPolicy) rewrite(dst netip.AddrPort) (netip.AddrPort, bool) {
	v, a := p.decide(dst.Addr())
	if v == verdictBlock {
		return dst, false
	}
	return netip.AddrPortFrom(a, dst.Port()), true
}
