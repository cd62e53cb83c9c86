package warren

import (
	"fmt"
	"regexp"
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
		Name:             s.cfg.TUNName,
		HealthInterval:   time.Duration(s.cfg.TUNHealthCheckMs) * time.Millisecond,
		NAT:              s.cfg.EnableNAT,
		EnableForwarding: s.cfg.EnableNAT,
		Policy:           pol,
		OnRepair: func(what string) {
			s.events.publish(Error{EventTime{time.Now()}, fmt.Errorf("warren: tun engine: nftables rules re-applied (%s)", what)})
		},
	})
}

// defaultTUNHealthCheckMs is the default of ServerConfig.TUNHealthCheckMs
// and ClientConfig.TUNHealthCheckMs.
const defaultTUNHealthCheckMs = int(fwdtun.DefaultHealthInterval / time.Millisecond)

// tunHealthCheckRange is why a tunHealthCheckMs is refused.
const tunHealthCheckRange = "must be 100-86400000 (milliseconds), or 0 for 60000"

// validTUNHealthCheckMs reports whether ms, a set tunHealthCheckMs, is in
// range.
func validTUNHealthCheckMs(ms int) bool { return ms >= 100 && ms <= 86400000 }

// tunNamePattern is what tunName may be: a Linux interface name (at most 15
// bytes, no '/', ':' or space) that is also a plain nftables table suffix.
var tunNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$`)

// validTUNName checks a tunName field; empty selects warren0.
func validTUNName(field, name string) error {
	if name == "" || tunNamePattern.MatchString(name) {
		return nil
	}
	return configErr(field, name, "must be 1-15 bytes of letters, digits, '_', '.' or '-', starting with a letter or digit (a Linux interface name)")
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
