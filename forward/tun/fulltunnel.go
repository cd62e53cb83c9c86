//go:build linux

package tun

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A full tunnel is what wg-quick does for AllowedIPs = 0.0.0.0/0: the
// default route goes into a routing table of its own (numbered FwMark), not
// into main, and two rules send every packet there except those carrying the
// mark:
//
//	32764: from all lookup main suppress_prefixlength 0
//	32765: not from all fwmark <mark> lookup <mark>
//	<mark> table: default dev <device>
//
// The first rule lets main's more specific routes (the LAN, the tunnel
// subnet itself) win; only main's default route is suppressed. The second
// sends the rest into the tunnel, unless the packet carries the mark: the
// client's own sockets to the hub set SO_MARK (MarkControl), so they keep
// using main and its default route, and the tunnel does not carry itself.
//
// A reply from the hub arrives without a mark; with strict reverse-path
// filtering the kernel would look its source up in the tunnel's table and
// drop it. So, as wg-quick does, the engine's nftables table copies the
// mark to the connection on the way out and back to each packet of the
// connection on the way in, and net.ipv4.conf.all.src_valid_mark makes the
// reverse-path check use it.

// rtprotWarren is the protocol (FRA_PROTOCOL, rtm_protocol) of every rule
// and route a full tunnel adds, so that Start can tell a killed run's
// leftovers from anyone else's. 0x57 is unassigned in rtnetlink.h.
const rtprotWarren = 0x57

// The priorities of the two rules, those wg-quick's end up with: before
// main's default rule (32766).
const (
	prioSuppress = 32764
	prioNotMark  = 32765
)

// srcValidMark is the sysctl the reverse-path check reads.
const srcValidMark = "/proc/sys/net/ipv4/conf/all/src_valid_mark"

// MarkControl returns a net.Dialer.Control / net.ListenConfig.Control
// function that puts mark on each socket (SO_MARK), so that a full tunnel
// with this FwMark routes the socket's packets outside the tunnel.
func MarkControl(mark uint32) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		})
		if err == nil {
			err = serr
		}
		if err != nil {
			return permErr(fmt.Sprintf("setting SO_MARK %#x on the socket to the hub", mark), err)
		}
		return nil
	}
}

// fullTunnel is the policy routing one engine installed.
type fullTunnel struct {
	mark   uint32
	link   int   // the device's index
	via    []int // families whose default goes into the device
	closed []int // families whose default is unreachable
	valid  bool  // Start turned src_valid_mark on
}

// family is netlink's number for p's address family.
func family(p netip.Prefix) int {
	if p.Addr().Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// defaultPrefix is the default route of fam.
func defaultPrefix(fam int) netip.Prefix {
	if fam == netlink.FAMILY_V4 {
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
}

// install removes a killed run's leftovers for the same mark, then adds the
// routes and rules.
func (f *fullTunnel) install() error {
	if err := f.removeRouting(); err != nil {
		return fmt.Errorf("removing a previous run's policy routing: %w", err)
	}
	for _, fam := range f.via {
		rt := &netlink.Route{LinkIndex: f.link, Dst: prefixNet(defaultPrefix(fam)), Scope: netlink.SCOPE_LINK,
			Table: int(f.mark), Protocol: rtprotWarren, Family: fam}
		if err := netlink.RouteReplace(rt); err != nil {
			return fmt.Errorf("adding default route into the device in table %d: %w", f.mark, err)
		}
	}
	for _, fam := range f.closed {
		// The tunnel cannot carry this family: what would have left outside
		// it fails instead.
		rt := &netlink.Route{Dst: prefixNet(defaultPrefix(fam)), Type: unix.RTN_UNREACHABLE,
			Table: int(f.mark), Protocol: rtprotWarren, Family: fam}
		if err := netlink.RouteReplace(rt); err != nil {
			return fmt.Errorf("adding unreachable default route in table %d: %w", f.mark, err)
		}
	}
	for _, fam := range f.families() {
		if !f.hasSuppress(fam) {
			r := netlink.NewRule()
			r.Family, r.Table, r.SuppressPrefixlen, r.Priority, r.Protocol = fam, unix.RT_TABLE_MAIN, 0, prioSuppress, rtprotWarren
			if err := netlink.RuleAdd(r); err != nil {
				return fmt.Errorf("adding rule lookup main suppress_prefixlength 0: %w", err)
			}
		}
		r := netlink.NewRule()
		r.Family, r.Table, r.Mark, r.Invert, r.Priority, r.Protocol = fam, int(f.mark), f.mark, true, prioNotMark, rtprotWarren
		if err := netlink.RuleAdd(r); err != nil {
			return fmt.Errorf("adding rule not fwmark %#x lookup %d: %w", f.mark, f.mark, err)
		}
	}
	old, err := os.ReadFile(srcValidMark)
	if err != nil {
		return err
	}
	if !f.valid && string(bytes.TrimSpace(old)) == "0" {
		if err := os.WriteFile(srcValidMark, []byte("1\n"), 0o644); err != nil {
			return fmt.Errorf("setting src_valid_mark: %w", err)
		}
		f.valid = true
	}
	return nil
}

func (f *fullTunnel) families() []int {
	return append(append([]int{}, f.via...), f.closed...)
}

// hasSuppress reports whether fam has Warren's suppress rule already
// (another engine's, or a killed run's, which is then shared).
func (f *fullTunnel) hasSuppress(fam int) bool {
	rules, err := netlink.RuleList(fam)
	if err != nil {
		return false
	}
	for _, r := range rules {
		if isSuppress(r) {
			return true
		}
	}
	return false
}

func isSuppress(r netlink.Rule) bool {
	return r.Protocol == rtprotWarren && r.Table == unix.RT_TABLE_MAIN && r.SuppressPrefixlen == 0
}

// check reports what of install's rules and routes is missing; "" when
// nothing is.
func (f *fullTunnel) check() (string, error) {
	for _, fam := range f.families() {
		rules, err := netlink.RuleList(fam)
		if err != nil {
			return "", err
		}
		suppress, notMark := false, false
		for _, r := range rules {
			suppress = suppress || isSuppress(r)
			notMark = notMark || (r.Protocol == rtprotWarren && r.Table == int(f.mark) && r.Invert && r.Mark == f.mark)
		}
		name := map[int]string{netlink.FAMILY_V4: "IPv4", netlink.FAMILY_V6: "IPv6"}[fam]
		switch {
		case !suppress:
			return name + " rule lookup main suppress_prefixlength 0 is missing", nil
		case !notMark:
			return fmt.Sprintf("%s rule not fwmark %#x lookup %d is missing", name, f.mark, f.mark), nil
		}
		routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: int(f.mark)}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return "", err
		}
		if !slices.ContainsFunc(routes, func(rt netlink.Route) bool {
			ones := 0
			if rt.Dst != nil {
				ones, _ = rt.Dst.Mask.Size()
			}
			return rt.Protocol == rtprotWarren && ones == 0
		}) {
			return fmt.Sprintf("%s default route in table %d is missing", name, f.mark), nil
		}
	}
	return "", nil
}

// remove undoes install: removeRouting, and src_valid_mark restored if
// install turned it on.
func (f *fullTunnel) remove() error {
	err := f.removeRouting()
	if f.valid {
		err = errors.Join(err, os.WriteFile(srcValidMark, []byte("0\n"), 0o644))
		f.valid = false
	}
	return err
}

// removeRouting deletes the routes in table mark and the rules that lead
// there, in both families; and Warren's suppress rule of a family once no
// Warren table is looked up in that family any more.
func (f *fullTunnel) removeRouting() error {
	var errs []error
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: int(f.mark)}, netlink.RT_FILTER_TABLE)
		if err != nil {
			errs = append(errs, err)
		}
		for _, rt := range routes {
			if rt.Protocol != rtprotWarren {
				continue
			}
			if err := netlink.RouteDel(&rt); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("deleting route %s in table %d: %w", rt.Dst, f.mark, err))
			}
		}
		rules, err := netlink.RuleList(fam)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		others := false
		var suppress []netlink.Rule
		for _, r := range rules {
			switch {
			case r.Protocol != rtprotWarren:
			case isSuppress(r):
				suppress = append(suppress, r)
			case r.Table == int(f.mark):
				if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
					errs = append(errs, fmt.Errorf("deleting rule %s: %w", r, err))
				}
			default:
				others = true
			}
		}
		if !others {
			for _, r := range suppress {
				if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
					errs = append(errs, fmt.Errorf("deleting rule %s: %w", r, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}
