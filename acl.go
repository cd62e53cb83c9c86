package warren

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"go4.org/netipx"
)

// ACL entries name addresses in one of four forms, IPv4 or IPv6 unless noted:
//
//	exact     10.0.0.7, 2001:db8::1
//	CIDR      10.0.0.0/8, 2001:db8::/32 (host bits are masked off: 10.0.0.7/8 is 10.0.0.0/8)
//	wildcard  192.168.1.*, 10.*.*.* (IPv4 only; "*" only in trailing octets)
//	range     10.0.0.1-10.0.0.100, 2001:db8::1-2001:db8::ff (same family, start <= end)
//
// Surrounding whitespace is ignored. IPv4-mapped IPv6 entries (::ffff:10.0.0.1) are
// stored as IPv4, and addresses are unmapped before matching, so a dual-stack
// listener's ::ffff:a.b.c.d remote address matches an IPv4 entry.
//
// Lists are compiled once into netipx.IPSets (sorted, merged ranges), so a lookup
// is a binary search that allocates nothing.

// acl is a compiled allow/block pair: deny overrides allow; an empty allow list allows all.
type acl struct {
	allow, block *netipx.IPSet
	allowAll     bool
}

// compileACL compiles an allow list and a block list. allowField and blockField
// name the lists in errors, which are *ConfigError with Field "list[i]".
func compileACL(allowField string, allow []string, blockField string, block []string) (*acl, error) {
	a := &acl{allowAll: len(allow) == 0}
	var err error
	if !a.allowAll {
		if a.allow, err = compileList(allowField, allow); err != nil {
			return nil, err
		}
	}
	if len(block) > 0 {
		if a.block, err = compileList(blockField, block); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// allows reports whether ip passes the ACL: it is not in the block list, and the
// allow list is empty or holds it. A nil *acl allows all. An invalid address
// passes only an ACL whose allow list is empty.
func (a *acl) allows(ip netip.Addr) bool {
	if a == nil {
		return true
	}
	ip = ip.Unmap().WithZone("")
	if a.block != nil && a.block.Contains(ip) {
		return false
	}
	return a.allowAll || a.allow.Contains(ip)
}

// compileBlockList compiles ServerConfig.ConnectionIPBlockList. The result is
// never nil (an empty list gives an empty set); match it with
// set.Contains(addr.Unmap()).
func compileBlockList(field string, list []string) (*netipx.IPSet, error) {
	return compileList(field, list)
}

// compileList builds one IPSet from list; errors name field[i].
func compileList(field string, list []string) (*netipx.IPSet, error) {
	var b netipx.IPSetBuilder
	for i, entry := range list {
		r, err := parseACLEntry(entry)
		if err != nil {
			reason := err.Error()
			var se *aclSyntaxError
			if errors.As(err, &se) {
				reason = se.reason
			}
			return nil, configErr(fmt.Sprintf("%s[%d]", field, i), entry, reason)
		}
		b.AddRange(r)
	}
	set, err := b.IPSet()
	if err != nil {
		// parseACLEntry only returns valid ranges, so this is a bug, not bad input.
		return nil, fmt.Errorf("warren: compiling %s: %w", field, err)
	}
	return set, nil
}

// aclSyntaxError is why an ACL entry does not parse.
type aclSyntaxError struct {
	entry  string
	reason string
}

func (e *aclSyntaxError) Error() string {
	return fmt.Sprintf("warren: invalid ACL entry %q: %s", e.entry, e.reason)
}

func aclErr(entry, reason string) error { return &aclSyntaxError{entry: entry, reason: reason} }

// parseACLEntry parses one ACL entry (see the syntax above) into the inclusive
// range of addresses it names.
func parseACLEntry(s string) (netipx.IPRange, error) {
	orig := s
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return netipx.IPRange{}, aclErr(orig, "empty entry")
	case strings.Contains(s, "-"):
		return parseACLRange(orig, s)
	case strings.Contains(s, "/"):
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netipx.IPRange{}, aclErr(orig, "not a CIDR prefix (want e.g. 10.0.0.0/8 or 2001:db8::/32)")
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		r := netipx.RangeOfPrefix(p.Masked())
		if r.From().Is4In6() || r.To().Is4In6() {
			// e.g. ::/80: it ends inside ::ffff:0:0/96, where IPv4
			// addresses are written as IPv6 ones. Addresses are
			// checked unmapped, so such a bound would mean neither.
			return netipx.IPRange{}, aclErr(orig, "CIDR prefix starts or ends inside the IPv4-mapped block ::ffff:0:0/96 (write IPv4 addresses as IPv4, e.g. 10.0.0.0/8)")
		}
		return r, nil
	case strings.Contains(s, "*"):
		return parseACLWildcard(orig, s)
	default:
		ip, err := parseACLAddr(s)
		if err != nil {
			return netipx.IPRange{}, aclErr(orig, "not an IP address, CIDR prefix, wildcard or range")
		}
		return netipx.IPRangeFrom(ip, ip), nil
	}
}

// parseACLAddr parses an exact address for an ACL: no zone, IPv4-mapped unmapped.
func parseACLAddr(s string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	if ip.Zone() != "" {
		return netip.Addr{}, errors.New("zone not allowed")
	}
	return ip.Unmap(), nil
}

func parseACLRange(orig, s string) (netipx.IPRange, error) {
	lo, hi, _ := strings.Cut(s, "-")
	from, err := parseACLAddr(strings.TrimSpace(lo))
	if err != nil {
		return netipx.IPRange{}, aclErr(orig, "range start is not an IP address")
	}
	to, err := parseACLAddr(strings.TrimSpace(hi))
	if err != nil {
		return netipx.IPRange{}, aclErr(orig, "range end is not an IP address")
	}
	if from.Is4() != to.Is4() {
		return netipx.IPRange{}, aclErr(orig, "range mixes IPv4 and IPv6")
	}
	if to.Less(from) {
		return netipx.IPRange{}, aclErr(orig, "range start is after its end")
	}
	return netipx.IPRangeFrom(from, to), nil
}

func parseACLWildcard(orig, s string) (netipx.IPRange, error) {
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return netipx.IPRange{}, aclErr(orig, "wildcard must be an IPv4 address with four octets, e.g. 192.168.1.*")
	}
	var from, to [4]byte
	wild := false
	for i, p := range parts {
		if p == "*" {
			wild = true
			from[i], to[i] = 0, 255
			continue
		}
		if wild {
			return netipx.IPRange{}, aclErr(orig, "wildcard \"*\" allowed only in trailing octets")
		}
		v, ok := parseOctet(p)
		if !ok {
			return netipx.IPRange{}, aclErr(orig, fmt.Sprintf("octet %q is not a number from 0 to 255 or \"*\"", p))
		}
		from[i], to[i] = v, v
	}
	return netipx.IPRangeFrom(netip.AddrFrom4(from), netip.AddrFrom4(to)), nil
}

// parseOctet parses a decimal octet as netip does: 0-255, no sign, no leading zero.
func parseOctet(s string) (byte, bool) {
	if s == "" || len(s) > 3 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.Atoi(s)
	if err != nil || v > 255 {
		return 0, false
	}
	return byte(v), true
}

// compiledSecurity is a ClientSecurity's lists, compiled: remote is checked
// against the client's real remote address after the handshake, dest against the
// destination of every packet the client sends.
type compiledSecurity struct {
	remote, dest *acl
}

// compileSecurity validates and compiles s. field prefixes error field names
// ("security" gives "security.ipAllowList[2]"). A nil s allows everything.
func compileSecurity(field string, s *ClientSecurity) (*compiledSecurity, error) {
	if s == nil {
		return &compiledSecurity{}, nil
	}
	sub := func(name string) string {
		if field == "" {
			return name
		}
		return field + "." + name
	}
	if s.MaxConnections < 0 {
		return nil, configErr(sub("maxConnections"), strconv.Itoa(s.MaxConnections), "must not be negative")
	}
	if rl := s.RateLimit; rl != nil {
		if rl.BytesPerSec <= 0 {
			return nil, configErr(sub("rateLimit.bytesPerSec"), strconv.FormatInt(rl.BytesPerSec, 10), "must be positive")
		}
		if rl.BurstBytes < 0 {
			return nil, configErr(sub("rateLimit.burstBytes"), strconv.FormatInt(rl.BurstBytes, 10), "must not be negative")
		}
	}
	remote, err := compileACL(sub("ipAllowList"), s.IPAllowList, sub("ipBlockList"), s.IPBlockList)
	if err != nil {
		return nil, err
	}
	dest, err := compileACL(sub("destinationAllowList"), s.DestinationAllowList, sub("destinationBlockList"), s.DestinationBlockList)
	if err != nil {
		return nil, err
	}
	return &compiledSecurity{remote: remote, dest: dest}, nil
}
