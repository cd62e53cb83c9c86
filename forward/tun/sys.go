//go:build linux

package tun

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// permErr wraps err from step; a missing privilege becomes ErrNeedNetAdmin.
func permErr(step string, err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%w (%s: %v)", ErrNeedNetAdmin, step, err)
	}
	return fmt.Errorf("forward/tun: %s: %w", step, err)
}

// removeStaleLink deletes a TUN device called name, the leftover of a run
// that was killed (or made persistent). A link of that name that is not a
// TUN device is someone else's: it is left alone and reported.
func removeStaleLink(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return err
	}
	if _, ok := l.(*netlink.Tuntap); !ok {
		return fmt.Errorf("a %s link named %s exists and is not a TUN device; pick another name", l.Type(), name)
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return err
	}
	return nil
}

// configureLink gives the device its address (which routes the subnet into
// it), brings it up and adds routes.
func configureLink(name string, local netip.Addr, subnet netip.Prefix, routes []netip.Prefix) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(local, subnet.Bits()))}
	if local.Is6() {
		// Duplicate address detection would leave the address tentative
		// (unusable) for a second on a link with no neighbours.
		addr.Flags = unix.IFA_F_NODAD
	}
	if err := netlink.AddrAdd(l, addr); err != nil {
		return fmt.Errorf("adding address %s: %w", addr.IPNet, err)
	}
	if local.Is4() {
		// An IPv4 tunnel carries no IPv6: without this the kernel sends
		// router solicitations and MLD reports into it for no one.
		err := os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1\n"), 0o644)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("disabling IPv6 on the device: %w", err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("setting link up: %w", err)
	}
	for _, r := range routes {
		rt := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: prefixNet(r.Masked()), Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteReplace(rt); err != nil {
			return fmt.Errorf("adding route %s: %w", r, err)
		}
	}
	return nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// defaultInterface is the name of the interface the host's default route
// (of the given family) leaves through.
func defaultInterface(v4 bool) (string, error) {
	fam := netlink.FAMILY_V6
	if v4 {
		fam = netlink.FAMILY_V4
	}
	routes, err := netlink.RouteList(nil, fam)
	if err != nil {
		return "", fmt.Errorf("forward/tun: listing routes to find the default interface: %w", err)
	}
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if r.LinkIndex == 0 {
			continue
		}
		l, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			return "", fmt.Errorf("forward/tun: default route's interface: %w", err)
		}
		return l.Attrs().Name, nil
	}
	return "", errors.New("forward/tun: NAT needs an outgoing interface and the host has no default route; name one (natInterface)")
}

// forwarding remembers a forwarding sysctl Start turned on.
type forwarding struct {
	path string
}

// enableForwarding turns IP forwarding on for the family if it is off; the
// result restores it (nil when it was already on).
func enableForwarding(v4 bool) (*forwarding, error) {
	path := "/proc/sys/net/ipv6/conf/all/forwarding"
	if v4 {
		path = "/proc/sys/net/ipv4/ip_forward"
	}
	old, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if string(bytes.TrimSpace(old)) != "0" {
		return nil, nil
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		return nil, err
	}
	return &forwarding{path: path}, nil
}

func (f *forwarding) restore() error {
	if f == nil {
		return nil
	}
	return os.WriteFile(f.path, []byte("0\n"), 0o644)
}
