package wgconfig

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// The value checks below are shared by Parse and Config.Validate, so that
// whatever Parse accepts, MarshalText writes, and the other way round. Each
// returns the parsed value and a reason, empty if the value is good.

const (
	minMTU = 68 // the IPv4 minimum (RFC 791), which Linux enforces
	maxMTU = 65535
)

// parseUint16 parses a decimal number from 0 to 65535: no sign, no
// underscores, no base prefix.
func parseUint16(s string) (int, bool) {
	n, err := strconv.ParseUint(s, 10, 16)
	return int(n), err == nil
}

func parseListenPort(s string) (int, string) {
	n, ok := parseUint16(s)
	if !ok {
		return 0, "want a port number from 0 to 65535"
	}
	return n, ""
}

func listenPortReason(n int) string {
	if n < 0 || n > 65535 {
		return "want a port number from 0 to 65535"
	}
	return ""
}

func parseMTU(s string) (int, string) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Sprintf("want a number from %d to %d", minMTU, maxMTU)
	}
	if r := mtuReason(int(n)); r != "" {
		return 0, r
	}
	return int(n), ""
}

// mtuReason accepts 0 (unset) as well as minMTU..maxMTU; parseMTU never
// passes it 0, since "MTU = 0" is a mistake rather than a way to unset it.
func mtuReason(n int) string {
	if n != 0 && (n < minMTU || n > maxMTU) {
		return fmt.Sprintf("want a number from %d to %d", minMTU, maxMTU)
	}
	return ""
}

// parseKeepalive reads PersistentKeepalive: seconds, or "off" as wg allows.
func parseKeepalive(s string) (int, string) {
	if strings.EqualFold(s, "off") {
		return 0, ""
	}
	n, ok := parseUint16(s)
	if !ok {
		return 0, "want seconds from 0 to 65535, or off"
	}
	return n, ""
}

func keepaliveReason(n int) string {
	if n < 0 || n > 65535 {
		return "want seconds from 0 to 65535"
	}
	return ""
}

// parsePrefix reads an Address or AllowedIPs entry: a CIDR prefix, or a
// bare address, which stands for itself alone (/32 or /128). Prefixes are
// kept as written, host bits included: an interface address needs them.
func parsePrefix(s string) (netip.Prefix, string) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, "not a CIDR prefix"
		}
		return p, ""
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, "not an IP address or CIDR prefix"
	}
	if a.Zone() != "" {
		return netip.Prefix{}, "an address with a zone is not allowed here"
	}
	return netip.PrefixFrom(a, a.BitLen()), ""
}

func prefixReason(p netip.Prefix) string {
	if !p.IsValid() {
		return "not a valid prefix"
	}
	return ""
}

func dnsAddrReason(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return "not a valid address"
	case a.Zone() != "":
		return "an address with a zone is not allowed here"
	}
	return ""
}

// domainReason checks a DNS name: dot-separated labels of letters, digits,
// '-' and '_', each 1 to 63 characters, 253 in all, with an optional final
// dot. A name whose last label is all digits is refused: it is a mistyped
// IPv4 address far more often than a name.
func domainReason(s string) string {
	name := strings.TrimSuffix(s, ".")
	if name == "" {
		return "empty name"
	}
	if len(name) > 253 {
		return "name longer than 253 characters"
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return "name has an empty label or one longer than 63 characters"
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Sprintf("character %q not allowed in a DNS name", c)
			}
		}
	}
	last := labels[len(labels)-1]
	if strings.Trim(last, "0123456789") == "" {
		return "not an IP address, and not a DNS name (its last label is a number)"
	}
	return ""
}

// dnsSearchReason checks a DNSSearch entry: a DNS name that does not read
// back as an address.
func dnsSearchReason(s string) string {
	if _, err := netip.ParseAddr(s); err == nil {
		return "an address, not a search domain (put it in DNS)"
	}
	return domainReason(s)
}

// endpointReason checks host:port as wg resolves it.
func endpointReason(s string) string {
	if strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == '#' || r == ',' || r == 0x7f }) {
		return "space, control characters, ',' and '#' are not allowed"
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return ae.Err + "; want host:port"
		}
		return "want host:port"
	}
	if n, ok := parseUint16(port); !ok || n == 0 {
		return "want a port number from 1 to 65535"
	}
	if host == "" {
		return "missing host"
	}
	bracketed := strings.HasPrefix(s, "[")
	if a, err := netip.ParseAddr(host); err == nil {
		if bracketed && !a.Is6() {
			return "brackets are only for IPv6 addresses"
		}
		return ""
	}
	if bracketed {
		return "not an IPv6 address in brackets"
	}
	return domainReason(host)
}

// commandReason checks a PreUp/PostUp/PreDown/PostDown command: one line,
// no '#' (wg-quick would cut the line there), no surrounding space (which a
// reader would trim away).
func commandReason(s string) string {
	switch {
	case s == "":
		return "empty command"
	case strings.ContainsAny(s, "\x00\r\n"):
		return "a command must be one line"
	case strings.Contains(s, "#"):
		return "'#' starts a comment, so a command cannot contain one"
	case strings.TrimSpace(s) != s:
		return "leading or trailing space would be lost"
	}
	return ""
}

// extraKeys are the Interface section keys kept in Interface.Extra, by lower-case
// name.
var extraKeys = map[string]string{
	"table":      "Table",
	"preup":      "PreUp",
	"predown":    "PreDown",
	"saveconfig": "SaveConfig",
	"fwmark":     "FwMark",
}

// repeatable reports whether a key may appear more than once in a section.
func repeatable(canonical string) bool {
	switch canonical {
	case "Address", "DNS", "AllowedIPs", "PreUp", "PostUp", "PreDown", "PostDown":
		return true
	}
	return false
}

// extraReason checks the value of an Interface.Extra entry; key is canonical.
func extraReason(key, value string) string {
	switch key {
	case "Table":
		if value == "" || strings.TrimLeft(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != "" {
			return "want off, auto, or a routing table number or name"
		}
	case "SaveConfig":
		if !strings.EqualFold(value, "true") && !strings.EqualFold(value, "false") {
			return "want true or false"
		}
	case "FwMark":
		if strings.EqualFold(value, "off") {
			return ""
		}
		var err error
		if hex, ok := strings.CutPrefix(strings.ToLower(value), "0x"); ok {
			_, err = strconv.ParseUint(hex, 16, 32)
		} else {
			_, err = strconv.ParseUint(value, 10, 32)
		}
		if err != nil {
			return "want off, or a 32-bit number in decimal or 0x hex"
		}
	case "PreUp", "PreDown":
		return commandReason(value)
	default:
		return "not a key wgconfig keeps"
	}
	return ""
}
