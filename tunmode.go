package warren

import (
	"fmt"
	"time"

	fwdtun "github.com/warrenvpn/warren/forward/tun"
)

// newTUNEngine builds the kernel TUN engine for forwardingMode tun: the
// destination policy as nftables rules, and with enableNat the masquerade
// out of the default interface and IP forwarding (restored on Close).
// Without enableNat the kernel drops everything that would leave the
// subnet, as the pipeline already does.
func (s *Server) newTUNEngine() *fwdtun.Engine {
	pol := &fwdtun.Policy{Default: fwdtun.Block}
	if s.cfg.EnableNAT {
		pol = s.policy.tunPolicy()
	}
	return fwdtun.New(fwdtun.Options{
		NAT:              s.cfg.EnableNAT,
		EnableForwarding: s.cfg.EnableNAT,
		Policy:           pol,
		OnRepair: func(what string) {
			s.events.publish(Error{EventTime{time.Now()}, fmt.Errorf("warren: tun engine: nftables rules re-applied (%s)", what)})
		},
	})
}

// tunPolicy is p in the TUN engine's terms; both mean the same (see
// forward/tun.Policy).
func (p *compiledPolicy) tunPolicy() *fwdtun.Policy {
	tp := &fwdtun.Policy{Target: p.target}
	switch p.def {
	case verdictBlock:
		tp.Default = fwdtun.Block
	case verdictForce:
		tp.Default = fwdtun.ForceTarget
	default:
		tp.Default = fwdtun.Allow
	}
	if p.allow != nil {
		tp.Allow = p.allow.Prefixes()
	}
	if p.block != nil {
		tp.Block = p.block.Prefixes()
	}
	return tp
}
