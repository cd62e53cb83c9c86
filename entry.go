package warren

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// ClientEntry is a registered client as the registry stores it. It holds no
// secrets: only public keys.
type ClientEntry struct {
	ClientID                string          `json:"clientId"`
	PublicKey               Key             `json:"publicKey"`
	WGPublicKey             Key             `json:"wgPublicKey"`
	AssignedIP              netip.Addr      `json:"assignedIp"`
	Security                *ClientSecurity `json:"security,omitempty"`
	Priority                int             `json:"priority"`
	ServerDefinedClientTags []string        `json:"serverDefinedClientTags,omitempty"`
	ClientDefinedClientTags []string        `json:"clientDefinedClientTags,omitempty"`
	Description             string          `json:"description,omitempty"`
	Enabled                 bool            `json:"enabled"`
	ExpiresAt               time.Time       `json:"expiresAt,omitzero"`
	CreatedAt               time.Time       `json:"createdAt,omitzero"`
	UpdatedAt               time.Time       `json:"updatedAt,omitzero"`
}

// UnmarshalJSON reads a ClientEntry; "tags" is accepted as a name for
// serverDefinedClientTags. It is strict, as the files it comes from are: an
// unknown field, here or in security, is an error, and so is "tags" together
// with serverDefinedClientTags.
func (e *ClientEntry) UnmarshalJSON(b []byte) error {
	type plain ClientEntry
	var aux struct {
		plain
		Tags []string `json:"tags"`
	}
	aux.plain = plain(*e)
	aux.ServerDefinedClientTags = nil
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&aux); err != nil {
		return fmt.Errorf("warren: client entry: %w", err)
	}
	tags := aux.ServerDefinedClientTags
	switch {
	case aux.Tags != nil && tags != nil:
		return errors.New("warren: client entry: tags and serverDefinedClientTags are one field, given twice")
	case aux.Tags != nil:
		tags = aux.Tags
	case tags == nil:
		tags = e.ServerDefinedClientTags
	}
	*e = ClientEntry(aux.plain)
	e.ServerDefinedClientTags = tags
	return nil
}

// clone returns a deep copy of e, so callers never share slices with the registry.
func (e ClientEntry) clone() ClientEntry {
	e.ServerDefinedClientTags = cloneStrings(e.ServerDefinedClientTags)
	e.ClientDefinedClientTags = cloneStrings(e.ClientDefinedClientTags)
	if e.Security != nil {
		s := e.Security.clone()
		e.Security = &s
	}
	return e
}

// ClientSecurity holds a client's access lists and limits. List entries use the
// ACL syntax: exact IPv4/IPv6 address, CIDR, wildcard ("192.168.1.*") or range
// ("10.0.0.1-10.0.0.100"). An empty allow list allows all; a block list entry
// overrides the allow list.
type ClientSecurity struct {
	// IPAllowList and IPBlockList are checked against the client's real remote
	// address after the handshake identifies it.
	IPAllowList []string `json:"ipAllowList,omitempty"`
	IPBlockList []string `json:"ipBlockList,omitempty"`
	// DestinationAllowList and DestinationBlockList are checked against the
	// destination of every packet the client sends.
	DestinationAllowList []string `json:"destinationAllowList,omitempty"`
	DestinationBlockList []string `json:"destinationBlockList,omitempty"`
	// MaxConnections caps the client's concurrent sessions; 0 means 1.
	// Sessions on every transport count, a WireGuard peer as one session.
	// A new session beyond the cap is let in and the oldest ends, told
	// "replaced by a newer session": a device that comes back on a new path
	// before its old session timed out gets in. All of a client's sessions
	// share its address; packets toward it go to its newest session. A lower
	// value set by UpdateClient ends the oldest live sessions beyond it at once.
	MaxConnections int `json:"maxConnections,omitempty"`
	// RateLimit caps the client's traffic; nil means unlimited. One token
	// bucket counts the client's bytes in both directions together (IP
	// packet lengths, what it sends plus what it is sent), shared by all of
	// its sessions on every transport and kept across reconnects: what a
	// client costs the hub is its link's traffic either way, and one budget
	// cannot be dodged by turning uploads into downloads. Packets beyond the
	// bucket wait in a short per-client queue (64 packets, 64 KiB) until
	// tokens come; only when it is full are they dropped, counted in
	// Statistics.Drops.RateLimit, so TCP inside the tunnel slows down as it
	// would behind a slow link. SetClientRateLimit, RemoveClientRateLimit
	// and UpdateClient change it on live sessions at once.
	RateLimit *RateLimit `json:"rateLimit,omitempty"`
}

func (s ClientSecurity) clone() ClientSecurity {
	s.IPAllowList = cloneStrings(s.IPAllowList)
	s.IPBlockList = cloneStrings(s.IPBlockList)
	s.DestinationAllowList = cloneStrings(s.DestinationAllowList)
	s.DestinationBlockList = cloneStrings(s.DestinationBlockList)
	if s.RateLimit != nil {
		r := *s.RateLimit
		s.RateLimit = &r
	}
	return s
}

// RateLimit is a token bucket: BytesPerSec sustained, BurstBytes at once.
type RateLimit struct {
	// BytesPerSec is the sustained rate, in bytes of IP packets per second
	// in both directions together. Must be positive.
	BytesPerSec int64 `json:"bytesPerSec"`
	// BurstBytes is the bucket's size: how much may pass at once after a
	// quiet spell. It must hold at least one packet of the hub's MTU; 0
	// means a tenth of BytesPerSec, at least the MTU.
	BurstBytes int64 `json:"burstBytes"`
}

func cloneStrings(s []string) []string {
	if s == nil {
		return nil
	}
	return append([]string(nil), s...)
}
