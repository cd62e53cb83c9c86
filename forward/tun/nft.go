//go:build linux

package tun

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"go4.org/netipx"
	"golang.org/x/sys/unix"
)

// tablePrefix starts the name of every table Warren owns.
const tablePrefix = "warren_"

// Chain names inside Warren's table.
const (
	chainPolicy  = "dest_policy"  // filter, prerouting, before DNAT: drops
	chainDNAT    = "force_target" // nat, prerouting: forceTarget
	chainSNAT    = "nat_out"      // nat, postrouting: masquerade
	chainMarkIn  = "mark_in"      // filter, prerouting: full tunnel, connection's mark to the packet
	chainMarkOut = "mark_out"     // filter, postrouting: full tunnel, packet's mark to the connection
)

// ruleset is the nftables table one engine owns:
//
//	table inet warren_<dev> {
//	  set block { type ipv4_addr; flags interval; ... }
//	  set allow { type ipv4_addr; flags interval; ... }
//	  chain dest_policy { type filter hook prerouting priority mangle
//	    iifname <dev> meta nfproto != ipv4 drop
//	    iifname <dev> ip daddr <subnet> accept
//	    iifname <dev> ip daddr @block drop
//	    iifname <dev> ip daddr @allow accept
//	    iifname <dev> drop                    (default block)
//	    iifname <dev> ip daddr 127.0.0.0/8 drop (default allow)
//	  }
//	  chain force_target { type nat hook prerouting priority dstnat   (forceTarget)
//	    iifname <dev> ip daddr <subnet> return
//	    iifname <dev> ip daddr @allow return
//	    iifname <dev> dnat ip to <target>
//	  }
//	  chain nat_out { type nat hook postrouting priority srcnat  (NAT)
//	    ip saddr <subnet> oifname <natOut> masquerade
//	  }
//	  chain mark_out { type filter hook postrouting priority mangle  (full tunnel)
//	    meta mark <mark> ct mark set meta mark
//	  }
//	  chain mark_in { type filter hook prerouting priority mangle  (full tunnel)
//	    ct mark <mark> meta mark set ct mark
//	  }
//	}
//
// The policy chain runs before DNAT, so it sees the destination the client
// asked for, as the userspace engine does.
type ruleset struct {
	table  string
	dev    string
	subnet netip.Prefix
	natOut string // "" : no masquerade
	policy *Policy
	mark   uint32 // full tunnel's fwmark; 0: none

	// What apply installed, for check: rules per chain, elements per set.
	rules map[string]int
	elems map[string]int
}

// fam is the subnet's family as nftables spells it.
func (r *ruleset) fam() byte {
	if r.subnet.Addr().Is4() {
		return unix.NFPROTO_IPV4
	}
	return unix.NFPROTO_IPV6
}

// apply replaces the table with a fresh one holding every rule, in one
// atomic batch: a leftover table of the same name (a killed run's, or one
// someone edited) is deleted first.
func (r *ruleset) apply() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: r.table, Family: nftables.TableFamilyINet}
	c.AddTable(t) // so the delete cannot fail on a missing table
	c.DelTable(t)
	c.AddTable(t)
	r.rules = map[string]int{}
	r.elems = map[string]int{}

	v4 := r.subnet.Addr().Is4()
	keyType := nftables.TypeIP6Addr
	if v4 {
		keyType = nftables.TypeIPAddr
	}
	iif := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(r.dev)},
	}
	isFam := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{r.fam()}},
	}
	fromDev := concat(iif, isFam)
	add := func(ch *nftables.Chain, exprs ...[]expr.Any) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: concat(exprs...)})
		r.rules[ch.Name]++
	}
	addSet := func(name string, prefixes []netip.Prefix) (*nftables.Set, error) {
		elems := setElements(prefixes, v4)
		if len(elems) == 0 {
			return nil, nil
		}
		s := &nftables.Set{Table: t, Name: name, KeyType: keyType, Interval: true}
		if err := c.AddSet(s, elems); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
		r.elems[name] = len(elems)
		return s, nil
	}

	if p := r.policy; p != nil {
		block, err := addSet("block", p.Block)
		if err != nil {
			return err
		}
		allow, err := addSet("allow", p.Allow)
		if err != nil {
			return err
		}
		pre := c.AddChain(&nftables.Chain{
			Name: chainPolicy, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle,
		})
		r.rules[chainPolicy] = 0
		add(pre, iif, []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{r.fam()}},
		}, verdict(expr.VerdictDrop))
		add(pre, fromDev, daddrIn(r.subnet), verdict(expr.VerdictAccept))
		if block != nil {
			add(pre, fromDev, daddrLookup(block, v4), verdict(expr.VerdictDrop))
		}
		if allow != nil {
			add(pre, fromDev, daddrLookup(allow, v4), verdict(expr.VerdictAccept))
		}
		switch p.Default {
		case Block:
			add(pre, iif, verdict(expr.VerdictDrop))
		case Allow:
			lo := netip.MustParsePrefix("127.0.0.0/8")
			if !v4 {
				lo = netip.MustParsePrefix("::1/128")
			}
			add(pre, fromDev, daddrIn(lo), verdict(expr.VerdictDrop))
		case ForceTarget:
			if !p.Target.IsValid() || p.Target.Unmap().Is4() != v4 {
				// A target of the other family cannot stand in for any
				// destination a client of this subnet can send to.
				add(pre, iif, verdict(expr.VerdictDrop))
				break
			}
			dnat := c.AddChain(&nftables.Chain{
				Name: chainDNAT, Table: t, Type: nftables.ChainTypeNAT,
				Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest,
			})
			r.rules[chainDNAT] = 0
			add(dnat, fromDev, daddrIn(r.subnet), verdict(expr.VerdictReturn))
			if allow != nil {
				add(dnat, fromDev, daddrLookup(allow, v4), verdict(expr.VerdictReturn))
			}
			add(dnat, fromDev, []expr.Any{
				&expr.Immediate{Register: 1, Data: p.Target.Unmap().AsSlice()},
				&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(r.fam()), RegAddrMin: 1},
			})
		default:
			return fmt.Errorf("unknown policy default %d", p.Default)
		}
	}
	if r.natOut != "" {
		post := c.AddChain(&nftables.Chain{
			Name: chainSNAT, Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
		})
		r.rules[chainSNAT] = 0
		add(post, isFam, saddrIn(r.subnet), []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(r.natOut)},
			&expr.Masq{},
		})
	}
	if r.mark != 0 {
		// The hub's replies carry the mark of the connection the client's
		// marked socket opened, so reverse-path filtering (with
		// src_valid_mark) looks their source up outside the tunnel, as
		// wg-quick does.
		m := binaryutil.NativeEndian.PutUint32(r.mark)
		out := c.AddChain(&nftables.Chain{
			Name: chainMarkOut, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityMangle,
		})
		r.rules[chainMarkOut] = 0
		add(out, []expr.Any{
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: m},
			&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true},
		})
		in := c.AddChain(&nftables.Chain{
			Name: chainMarkIn, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle,
		})
		r.rules[chainMarkIn] = 0
		add(in, []expr.Any{
			&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: m},
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1, SourceRegister: true},
		})
	}
	return c.Flush()
}

// check reports what differs between the kernel's table and what apply
// installed; "" when nothing does.
func (r *ruleset) check() (string, error) {
	c, err := nftables.New()
	if err != nil {
		return "", err
	}
	t, err := c.ListTableOfFamily(r.table, nftables.TableFamilyINet)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return "table inet " + r.table + " is missing", nil
		}
		return "", err
	}
	for name, want := range r.rules {
		ch, err := c.ListChain(t, name)
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				return "chain " + name + " is missing", nil
			}
			return "", err
		}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return "", err
		}
		if len(rules) != want {
			return fmt.Sprintf("chain %s has %d rules, want %d", name, len(rules), want), nil
		}
	}
	for name, want := range r.elems {
		s, err := c.GetSetByName(t, name)
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				return "set " + name + " is missing", nil
			}
			return "", err
		}
		got, err := c.GetSetElements(s)
		if err != nil {
			return "", err
		}
		if len(got) != want {
			return fmt.Sprintf("set %s has %d elements, want %d", name, len(got), want), nil
		}
	}
	return "", nil
}

// remove deletes the table (and with it every rule Warren added).
func (r *ruleset) remove() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: r.table, Family: nftables.TableFamilyINet}
	c.AddTable(t) // so the delete cannot fail on a missing table
	c.DelTable(t)
	return c.Flush()
}

// setElements turns prefixes of one family into the elements of an
// interval set: each merged range's start, and the address after its end
// marked IntervalEnd (none for a range that ends at the last address).
func setElements(prefixes []netip.Prefix, v4 bool) []nftables.SetElement {
	var b netipx.IPSetBuilder
	for _, p := range prefixes {
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if p.IsValid() && p.Addr().Is4() == v4 {
			b.AddPrefix(p.Masked())
		}
	}
	set, _ := b.IPSet()
	var elems []nftables.SetElement
	for _, rg := range set.Ranges() {
		elems = append(elems, nftables.SetElement{Key: rg.From().AsSlice()})
		if next := rg.To().Next(); next.IsValid() {
			elems = append(elems, nftables.SetElement{Key: next.AsSlice(), IntervalEnd: true})
		}
	}
	return elems
}

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

// addrPayload loads the source or destination address into register 1.
func addrPayload(v4, dst bool) *expr.Payload {
	off, n := uint32(12), uint32(4)
	if v4 && dst {
		off = 16
	}
	if !v4 {
		off, n = 8, 16
		if dst {
			off = 24
		}
	}
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n}
}

func daddrIn(p netip.Prefix) []expr.Any { return addrIn(p, true) }
func saddrIn(p netip.Prefix) []expr.Any { return addrIn(p, false) }

func addrIn(p netip.Prefix, dst bool) []expr.Any {
	p = p.Masked()
	n := uint32(p.Addr().BitLen() / 8)
	m := make([]byte, n)
	full := p.Bits()
	for i := range m {
		switch {
		case full >= 8:
			m[i] = 0xff
			full -= 8
		case full > 0:
			m[i] = byte(0xff << (8 - full))
			full = 0
		}
	}
	return []expr.Any{
		addrPayload(p.Addr().Is4(), dst),
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: m, Xor: make([]byte, n)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()},
	}
}

func daddrLookup(s *nftables.Set, v4 bool) []expr.Any {
	return []expr.Any{
		addrPayload(v4, true),
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
	}
}

// ifname is an interface name as nftables compares it: NUL-padded to
// IFNAMSIZ.
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}
