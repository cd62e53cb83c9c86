package wgconfig

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// Validate reports the first problem that would stop c from being written
// and read back: a zero PrivateKey or PublicKey, two peers with one
// PublicKey, an invalid prefix or address, a port, MTU or keepalive out of
// range, an Endpoint that is not host:port, a search domain that is not a
// DNS name, an Extra key this package does not keep, or a command that is
// not a single line free of '#'. The error is a [*ConfigError] whose Field
// is a path such as "Peers[1].Endpoint".
func (c Config) Validate() error {
	in := c.Interface
	if in.PrivateKey.IsZero() {
		return &ConfigError{Field: "Interface.PrivateKey", Reason: "not set (all-zero key)", Err: ErrInvalidKey}
	}
	for i, p := range in.Addresses {
		if r := prefixReason(p); r != "" {
			return &ConfigError{Field: fmt.Sprintf("Interface.Addresses[%d]", i), Value: p.String(), Reason: r}
		}
	}
	if r := listenPortReason(in.ListenPort); r != "" {
		return &ConfigError{Field: "Interface.ListenPort", Value: strconv.Itoa(in.ListenPort), Reason: r}
	}
	for i, a := range in.DNS {
		if r := dnsAddrReason(a); r != "" {
			return &ConfigError{Field: fmt.Sprintf("Interface.DNS[%d]", i), Value: a.String(), Reason: r}
		}
	}
	for i, s := range in.DNSSearch {
		if r := dnsSearchReason(s); r != "" {
			return &ConfigError{Field: fmt.Sprintf("Interface.DNSSearch[%d]", i), Value: s, Reason: r}
		}
	}
	if r := mtuReason(in.MTU); r != "" {
		return &ConfigError{Field: "Interface.MTU", Value: strconv.Itoa(in.MTU), Reason: r}
	}
	seen := map[string]bool{}
	for i, kv := range in.Extra {
		field := fmt.Sprintf("Interface.Extra[%d]", i)
		key, ok := extraKeys[strings.ToLower(kv.Key)]
		if !ok {
			return &ConfigError{Field: field, Value: kv.Key, Reason: "not one of Table, PreUp, PreDown, SaveConfig, FwMark"}
		}
		if seen[key] && !repeatable(key) {
			return &ConfigError{Field: field, Value: kv.Key, Reason: "key given twice"}
		}
		seen[key] = true
		if r := extraReason(key, kv.Value); r != "" {
			return &ConfigError{Field: field, Value: kv.Value, Reason: key + ": " + r}
		}
	}
	for i, s := range in.PostUp {
		if r := commandReason(s); r != "" {
			return &ConfigError{Field: fmt.Sprintf("Interface.PostUp[%d]", i), Value: s, Reason: r}
		}
	}
	for i, s := range in.PostDown {
		if r := commandReason(s); r != "" {
			return &ConfigError{Field: fmt.Sprintf("Interface.PostDown[%d]", i), Value: s, Reason: r}
		}
	}
	keys := make(map[Key]int, len(c.Peers))
	for i, p := range c.Peers {
		field := fmt.Sprintf("Peers[%d].", i)
		if p.PublicKey.IsZero() {
			return &ConfigError{Field: field + "PublicKey", Reason: "not set (all-zero key)", Err: ErrInvalidKey}
		}
		if j, dup := keys[p.PublicKey]; dup {
			return &ConfigError{Field: field + "PublicKey", Value: p.PublicKey.String(), Reason: fmt.Sprintf("same as Peers[%d]", j)}
		}
		keys[p.PublicKey] = i
		if p.Endpoint != "" {
			if r := endpointReason(p.Endpoint); r != "" {
				return &ConfigError{Field: field + "Endpoint", Value: p.Endpoint, Reason: r}
			}
		}
		for j, a := range p.AllowedIPs {
			if r := prefixReason(a); r != "" {
				return &ConfigError{Field: fmt.Sprintf("%sAllowedIPs[%d]", field, j), Value: a.String(), Reason: r}
			}
		}
		if r := keepaliveReason(p.PersistentKeepalive); r != "" {
			return &ConfigError{Field: field + "PersistentKeepalive", Value: strconv.Itoa(p.PersistentKeepalive), Reason: r}
		}
	}
	return nil
}

// MarshalText implements [encoding.TextMarshaler]: it validates c (see
// [Config.Validate]) and writes the canonical text. The Interface section
// comes first, its keys in this order: PrivateKey, Address, ListenPort, DNS (the
// addresses, then the search domains), MTU, the Extra entries in their
// order, PostUp, PostDown. Then each Peer section, after a blank line: PublicKey,
// PresharedKey, Endpoint, AllowedIPs, PersistentKeepalive. Lists go on one
// line, separated by ", "; zero values and empty lists are left out.
//
// The text holds the private key: treat it as a secret. Because Config is
// a TextMarshaler (and, through [Config.UnmarshalText], an unmarshaler),
// encoding/json writes and reads it as this text in a JSON string.
func (c Config) MarshalText() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	in := c.Interface
	b.WriteString("[Interface]\n")
	line(&b, "PrivateKey", in.PrivateKey.String())
	line(&b, "Address", join(in.Addresses))
	if in.ListenPort != 0 {
		line(&b, "ListenPort", strconv.Itoa(in.ListenPort))
	}
	dns := append(strs(in.DNS), in.DNSSearch...)
	line(&b, "DNS", strings.Join(dns, ", "))
	if in.MTU != 0 {
		line(&b, "MTU", strconv.Itoa(in.MTU))
	}
	for _, kv := range in.Extra {
		line(&b, extraKeys[strings.ToLower(kv.Key)], kv.Value)
	}
	for _, s := range in.PostUp {
		line(&b, "PostUp", s)
	}
	for _, s := range in.PostDown {
		line(&b, "PostDown", s)
	}
	writePeers(&b, c.Peers)
	return b.Bytes(), nil
}

// StripForWG returns what `wg-quick strip` prints for c: the configuration
// `wg setconf` and `wg syncconf` accept, without the wg-quick keys (Address,
// DNS, MTU, Table, the hooks, SaveConfig). The Interface section keeps PrivateKey,
// ListenPort and FwMark (from Extra); peers are written in full. It
// validates c first, as MarshalText does.
func (c Config) StripForWG() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString("[Interface]\n")
	line(&b, "PrivateKey", c.Interface.PrivateKey.String())
	if c.Interface.ListenPort != 0 {
		line(&b, "ListenPort", strconv.Itoa(c.Interface.ListenPort))
	}
	for _, kv := range c.Interface.Extra {
		if strings.EqualFold(kv.Key, "FwMark") {
			line(&b, "FwMark", kv.Value)
		}
	}
	writePeers(&b, c.Peers)
	return b.Bytes(), nil
}

func writePeers(b *bytes.Buffer, peers []Peer) {
	for _, p := range peers {
		b.WriteString("\n[Peer]\n")
		line(b, "PublicKey", p.PublicKey.String())
		if p.PresharedKey != nil {
			line(b, "PresharedKey", p.PresharedKey.String())
		}
		line(b, "Endpoint", p.Endpoint)
		line(b, "AllowedIPs", join(p.AllowedIPs))
		if p.PersistentKeepalive != 0 {
			line(b, "PersistentKeepalive", strconv.Itoa(p.PersistentKeepalive))
		}
	}
}

// line writes key = value, or nothing if value is empty.
func line(b *bytes.Buffer, key, value string) {
	if value == "" {
		return
	}
	b.WriteString(key)
	b.WriteString(" = ")
	b.WriteString(value)
	b.WriteByte('\n')
}

// join writes a list of prefixes or addresses separated by ", ".
func join[T fmt.Stringer](xs []T) string {
	return strings.Join(strs(xs), ", ")
}

func strs[T fmt.Stringer](xs []T) []string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = x.String()
	}
	return s
}
