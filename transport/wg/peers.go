package wg

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/device"
)

// AddPeer adds p, or replaces the peer with p's public key: its AllowedIPs,
// keepalive and preshared key become p's at once, and its endpoint too if p
// has one. An invalid field is a *ConfigError naming it ("Peer.AllowedIPs[1]"),
// and changes nothing.
func (d *Device) AddPeer(p Peer) error {
	if d.closed.Load() {
		return fmt.Errorf("wg: add peer: %w", net.ErrClosed)
	}
	if err := d.validatePeer(p); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "public_key=%s\n", hex.EncodeToString(p.PublicKey[:]))
	b.WriteString("replace_allowed_ips=true\n")
	for _, pfx := range p.AllowedIPs {
		fmt.Fprintf(&b, "allowed_ip=%s\n", pfx.Masked())
	}
	var psk [32]byte
	if p.PresharedKey != nil {
		psk = *p.PresharedKey
	}
	fmt.Fprintf(&b, "preshared_key=%s\n", hex.EncodeToString(psk[:]))
	if p.Endpoint.IsValid() {
		fmt.Fprintf(&b, "endpoint=%s\n", p.Endpoint)
	}
	fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", p.PersistentKeepalive)
	if err := d.wg.IpcSet(b.String()); err != nil {
		return fmt.Errorf("wg: add peer %s: %w", keyString(p.PublicKey), err)
	}
	return nil
}

func (d *Device) validatePeer(p Peer) error {
	if p.PublicKey == [32]byte{} {
		return &ConfigError{Field: "Peer.PublicKey", Reason: "must not be zero"}
	}
	if p.PublicKey == d.pub {
		return &ConfigError{Field: "Peer.PublicKey", Value: keyString(p.PublicKey), Reason: "is this device's own key"}
	}
	for i, pfx := range p.AllowedIPs {
		if !pfx.IsValid() {
			return &ConfigError{Field: fmt.Sprintf("Peer.AllowedIPs[%d]", i), Value: pfx.String(), Reason: "not a valid prefix"}
		}
	}
	if p.Endpoint != (netip.AddrPort{}) {
		switch {
		case !p.Endpoint.Addr().IsValid():
			return &ConfigError{Field: "Peer.Endpoint", Value: p.Endpoint.String(), Reason: "no address"}
		case p.Endpoint.Addr().IsUnspecified():
			return &ConfigError{Field: "Peer.Endpoint", Value: p.Endpoint.String(), Reason: "unspecified address"}
		case p.Endpoint.Port() == 0:
			return &ConfigError{Field: "Peer.Endpoint", Value: p.Endpoint.String(), Reason: "port must not be 0"}
		}
	}
	if p.PersistentKeepalive < 0 || p.PersistentKeepalive > 65535 {
		return &ConfigError{Field: "Peer.PersistentKeepalive", Value: strconv.Itoa(p.PersistentKeepalive), Reason: "must be 0 to 65535 seconds"}
	}
	return nil
}

// RemovePeer removes the peer with public key pub: its packets are no longer
// accepted and nothing is sent to it. The error wraps ErrUnknownPeer if
// there is no such peer. If the peer was up, a Down event follows.
func (d *Device) RemovePeer(pub [32]byte) error {
	if d.closed.Load() {
		return fmt.Errorf("wg: remove peer: %w", net.ErrClosed)
	}
	key := device.NoisePublicKey(pub)
	if d.wg.LookupPeer(key) == nil {
		return fmt.Errorf("wg: remove peer %s: %w", keyString(pub), ErrUnknownPeer)
	}
	d.wg.RemovePeer(key)
	return nil
}

// Peers returns the status of every peer, in no particular order.
func (d *Device) Peers() []PeerStatus {
	if d.closed.Load() {
		return nil
	}
	s, err := d.wg.IpcGet()
	if err != nil {
		d.log.Warn("wireguard: read peers", "err", err)
		return nil
	}
	return parsePeers(s)
}

// parsePeers reads the peers out of an IpcGet answer. A line it cannot read
// is skipped: the text comes from wireguard-go, but this must not panic.
func parsePeers(s string) []PeerStatus {
	var (
		peers         []PeerStatus
		cur           *PeerStatus
		hsSec, hsNsec int64
	)
	flush := func() {
		if cur != nil {
			if hsSec != 0 || hsNsec != 0 {
				cur.LastHandshake = time.Unix(hsSec, hsNsec)
			}
			peers = append(peers, *cur)
		}
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		if key == "public_key" {
			flush()
			cur, hsSec, hsNsec = &PeerStatus{}, 0, 0
			if b, err := hex.DecodeString(value); err == nil && len(b) == 32 {
				copy(cur.PublicKey[:], b)
			}
			continue
		}
		if cur == nil {
			continue // device lines
		}
		switch key {
		case "endpoint":
			if ap, err := netip.ParseAddrPort(value); err == nil {
				cur.Endpoint = ap
			}
		case "last_handshake_time_sec":
			hsSec, _ = strconv.ParseInt(value, 10, 64)
		case "last_handshake_time_nsec":
			hsNsec, _ = strconv.ParseInt(value, 10, 64)
		case "rx_bytes":
			cur.RxBytes, _ = strconv.ParseUint(value, 10, 64)
		case "tx_bytes":
			cur.TxBytes, _ = strconv.ParseUint(value, 10, 64)
		case "allowed_ip":
			if pfx, err := netip.ParsePrefix(value); err == nil {
				cur.AllowedIPs = append(cur.AllowedIPs, pfx)
			}
		}
	}
	flush()
	return peers
}
