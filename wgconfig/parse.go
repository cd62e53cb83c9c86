package wgconfig

import (
	"net/netip"
	"strings"
)

// Parse reads a WireGuard configuration file.
//
// Section names and keys are matched without regard to case. A '#' starts
// a comment that runs to the end of the line; blank lines and space around
// '=' and list separators are ignored, as are a leading UTF-8 byte order
// mark and CRLF line ends. Address, DNS and AllowedIPs take comma-separated
// lists and may be repeated, each line adding to the list; Address and DNS
// also split on spaces, as wg-quick does. An empty AllowedIPs, Address or
// DNS line adds nothing.
//
// There must be exactly one Interface section, with a PrivateKey, and
// every Peer section needs a PublicKey; peers must not share a PublicKey. Keys
// that take one value may appear once per section. Keys wg-quick knows but
// this package does not model go to [Interface.Extra].
//
// Every error is a [*ParseError]; an error about a key's text also wraps
// [ErrInvalidKey]. Parse does not resolve Endpoint names.
func Parse(data []byte) (Config, error) {
	var p parser
	text := strings.TrimPrefix(string(data), "\ufeff")
	for i, raw := range strings.Split(text, "\n") {
		if err := p.line(i+1, raw); err != nil {
			return Config{}, err
		}
	}
	if err := p.endSection(); err != nil {
		return Config{}, err
	}
	if p.ifaceLine == 0 {
		return Config{}, &ParseError{Reason: "no [Interface] section"}
	}
	return p.cfg, nil
}

// UnmarshalText implements [encoding.TextUnmarshaler] with [Parse].
func (c *Config) UnmarshalText(text []byte) error {
	cfg, err := Parse(text)
	if err != nil {
		return err
	}
	*c = cfg
	return nil
}

type section int

const (
	noSection section = iota
	interfaceSection
	peerSection
)

type parser struct {
	cfg         Config
	section     section
	sectionLine int             // line of the current section's header
	ifaceLine   int             // line of the [Interface] header; 0 until seen
	seen        map[string]bool // single-valued keys seen in this section
	peerKeys    map[Key]bool    // PublicKeys of all peers so far
}

func (p *parser) line(n int, raw string) error {
	line := raw
	if i := strings.IndexByte(line, '#'); i >= 0 {
		line = line[:i]
	}
	line = strings.TrimSpace(line)
	if line == "" {
		return nil
	}
	if strings.HasPrefix(line, "[") {
		return p.header(n, line)
	}
	key, value, ok := strings.Cut(line, "=")
	key, value = strings.TrimSpace(key), strings.TrimSpace(value)
	if !ok {
		return &ParseError{Line: n, Key: key, Reason: "want key = value"}
	}
	if key == "" {
		return &ParseError{Line: n, Value: line, Reason: "missing key before '='"}
	}
	switch p.section {
	case interfaceSection:
		return p.interfaceKey(n, key, value)
	case peerSection:
		return p.peerKey(n, key, value)
	}
	return &ParseError{Line: n, Key: key, Value: value, Reason: "key outside a section; want [Interface] or [Peer] first"}
}

func (p *parser) header(n int, line string) error {
	if !strings.HasSuffix(line, "]") {
		return &ParseError{Line: n, Value: line, Reason: "malformed section header"}
	}
	name := line[1 : len(line)-1]
	var next section
	switch {
	case strings.EqualFold(name, "Interface"):
		if p.ifaceLine != 0 {
			return &ParseError{Line: n, Value: line, Reason: "second [Interface] section"}
		}
		next = interfaceSection
	case strings.EqualFold(name, "Peer"):
		next = peerSection
	default:
		return &ParseError{Line: n, Value: line, Reason: "unknown section; want [Interface] or [Peer]"}
	}
	if err := p.endSection(); err != nil {
		return err
	}
	p.section, p.sectionLine, p.seen = next, n, map[string]bool{}
	if next == interfaceSection {
		p.ifaceLine = n
	} else {
		p.cfg.Peers = append(p.cfg.Peers, Peer{})
	}
	return nil
}

// endSection checks that the section just read has its required key.
func (p *parser) endSection() error {
	switch p.section {
	case interfaceSection:
		if !p.seen["PrivateKey"] {
			return &ParseError{Line: p.sectionLine, Key: "PrivateKey", Reason: "[Interface] has no PrivateKey"}
		}
	case peerSection:
		if !p.seen["PublicKey"] {
			return &ParseError{Line: p.sectionLine, Key: "PublicKey", Reason: "[Peer] has no PublicKey"}
		}
	}
	return nil
}

// once records a single-valued key and fails if the section has it already.
func (p *parser) once(n int, key, value string) error {
	if repeatable(key) {
		return nil
	}
	if p.seen[key] {
		return &ParseError{Line: n, Key: key, Value: value, Reason: "key given twice in one section"}
	}
	p.seen[key] = true
	return nil
}

func (p *parser) interfaceKey(n int, key, value string) error {
	iface := &p.cfg.Interface
	fail := func(canonical, reason string) error {
		return &ParseError{Line: n, Key: canonical, Value: value, Reason: reason}
	}
	lower := strings.ToLower(key)
	canonical, extra := extraKeys[lower]
	if !extra {
		canonical = map[string]string{
			"privatekey": "PrivateKey",
			"address":    "Address",
			"listenport": "ListenPort",
			"dns":        "DNS",
			"mtu":        "MTU",
			"postup":     "PostUp",
			"postdown":   "PostDown",
		}[lower]
	}
	if canonical == "" {
		return &ParseError{Line: n, Key: key, Value: value, Reason: "unknown key in [Interface]"}
	}
	if err := p.once(n, canonical, value); err != nil {
		return err
	}
	if extra {
		if r := extraReason(canonical, value); r != "" {
			return fail(canonical, r)
		}
		iface.Extra = append(iface.Extra, KV{Key: canonical, Value: value})
		return nil
	}
	switch canonical {
	case "PrivateKey":
		k, err := p.key(n, canonical, value)
		if err != nil {
			return err
		}
		iface.PrivateKey = k
	case "Address":
		for _, s := range splitList(value, true) {
			if s == "" {
				return fail(canonical, "empty entry in list")
			}
			pfx, r := parsePrefix(s)
			if r != "" {
				return &ParseError{Line: n, Key: canonical, Value: s, Reason: r}
			}
			iface.Addresses = append(iface.Addresses, pfx)
		}
	case "ListenPort":
		port, r := parseListenPort(value)
		if r != "" {
			return fail(canonical, r)
		}
		iface.ListenPort = port
	case "DNS":
		for _, s := range splitList(value, true) {
			if s == "" {
				return fail(canonical, "empty entry in list")
			}
			if a, err := netip.ParseAddr(s); err == nil {
				if r := dnsAddrReason(a); r != "" {
					return &ParseError{Line: n, Key: canonical, Value: s, Reason: r}
				}
				iface.DNS = append(iface.DNS, a)
				continue
			}
			if r := dnsSearchReason(s); r != "" {
				return &ParseError{Line: n, Key: canonical, Value: s, Reason: r}
			}
			iface.DNSSearch = append(iface.DNSSearch, s)
		}
	case "MTU":
		mtu, r := parseMTU(value)
		if r != "" {
			return fail(canonical, r)
		}
		iface.MTU = mtu
	case "PostUp", "PostDown":
		if r := commandReason(value); r != "" {
			return fail(canonical, r)
		}
		if canonical == "PostUp" {
			iface.PostUp = append(iface.PostUp, value)
		} else {
			iface.PostDown = append(iface.PostDown, value)
		}
	}
	return nil
}

func (p *parser) peerKey(n int, key, value string) error {
	peer := &p.cfg.Peers[len(p.cfg.Peers)-1]
	fail := func(canonical, reason string) error {
		return &ParseError{Line: n, Key: canonical, Value: value, Reason: reason}
	}
	canonical := map[string]string{
		"publickey":           "PublicKey",
		"presharedkey":        "PresharedKey",
		"endpoint":            "Endpoint",
		"allowedips":          "AllowedIPs",
		"persistentkeepalive": "PersistentKeepalive",
	}[strings.ToLower(key)]
	if canonical == "" {
		return &ParseError{Line: n, Key: key, Value: value, Reason: "unknown key in [Peer]"}
	}
	if err := p.once(n, canonical, value); err != nil {
		return err
	}
	switch canonical {
	case "PublicKey":
		k, err := p.key(n, canonical, value)
		if err != nil {
			return err
		}
		if p.peerKeys[k] {
			return fail(canonical, "two peers with the same PublicKey")
		}
		if p.peerKeys == nil {
			p.peerKeys = map[Key]bool{}
		}
		p.peerKeys[k] = true
		peer.PublicKey = k
	case "PresharedKey":
		k, reason := decodeKey(value)
		if reason != "" {
			return &ParseError{Line: n, Key: canonical, Value: value, Reason: "invalid key: " + reason, Err: ErrInvalidKey}
		}
		peer.PresharedKey = &k
	case "Endpoint":
		if r := endpointReason(value); r != "" {
			return fail(canonical, r)
		}
		peer.Endpoint = value
	case "AllowedIPs":
		for _, s := range splitList(value, false) {
			if s == "" {
				return fail(canonical, "empty entry in list")
			}
			pfx, r := parsePrefix(s)
			if r != "" {
				return &ParseError{Line: n, Key: canonical, Value: s, Reason: r}
			}
			peer.AllowedIPs = append(peer.AllowedIPs, pfx)
		}
	case "PersistentKeepalive":
		secs, r := parseKeepalive(value)
		if r != "" {
			return fail(canonical, r)
		}
		peer.PersistentKeepalive = secs
	}
	return nil
}

// key reads a PrivateKey or PublicKey, which must not be zero: wg reads a
// zero key as "remove the key".
func (p *parser) key(n int, canonical, value string) (Key, error) {
	k, reason := decodeKey(value)
	if reason != "" {
		return Key{}, &ParseError{Line: n, Key: canonical, Value: value, Reason: "invalid key: " + reason, Err: ErrInvalidKey}
	}
	if k.IsZero() {
		return Key{}, &ParseError{Line: n, Key: canonical, Value: value, Reason: "all-zero key", Err: ErrInvalidKey}
	}
	return k, nil
}

// splitList splits a list value on commas, and also on spaces if spaces is
// set, trimming each entry. An empty value gives no entries; an empty entry
// between commas is returned as "" for the caller to reject.
func splitList(value string, spaces bool) []string {
	if value == "" {
		return nil
	}
	var out []string
	for _, s := range strings.Split(value, ",") {
		s = strings.TrimSpace(s)
		if spaces && s != "" {
			out = append(out, strings.Fields(s)...)
			continue
		}
		out = append(out, s)
	}
	return out
}
