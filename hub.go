package warren

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"
)

// ClientSpec describes a client to register with CreateClient.
type ClientSpec struct {
	// ClientID names the client: 1-63 letters, digits, '.', '_' or '-'. Required.
	ClientID    string `json:"clientId"`
	Description string `json:"description,omitempty"`
	// ServerDefinedClientTags are labels the hub attaches to the client.
	ServerDefinedClientTags []string `json:"serverDefinedClientTags,omitempty"`
	// Security holds the client's ACLs and limits; nil allows everything.
	Security *ClientSecurity `json:"security,omitempty"`
	// Priority weighs the client in the hub's scheduling toward its engine,
	// 0-7: when the engine cannot keep up, clients with packets waiting
	// share it in proportion to priority+1 (7 against 0 is 8:1), and no
	// client is starved (see qos.go). UpdateClient changes it at once.
	Priority int `json:"priority,omitempty"`
	// ExpiresAt, when set, ends the client's access at that time on every
	// transport: its sessions end and its WireGuard peer leaves the hub's
	// device (within milliseconds; within 5 s after a step of the wall
	// clock), and its handshakes are refused from then on.
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
	// ForwardingMode is written into the client's bundle config.
	ForwardingMode ForwardingMode `json:"forwardingMode,omitempty"`
}

// ClientUpdate changes a registered client; nil fields stay as they are.
// Live sessions follow the change at once: see UpdateClient.
type ClientUpdate struct {
	Description             *string         `json:"description,omitempty"`
	ServerDefinedClientTags *[]string       `json:"serverDefinedClientTags,omitempty"`
	Security                *ClientSecurity `json:"security,omitempty"`
	Priority                *int            `json:"priority,omitempty"`
	// ExpiresAt moves the end of the client's access; a pointer to the zero
	// time removes it.
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
}

// ClientSecrets are a client's private keys. The hub never stores them.
type ClientSecrets struct {
	NoisePrivateKey Key `json:"noisePrivateKey"`
	WGPrivateKey    Key `json:"wgPrivateKey"`
}

// ClientBundle is everything a new client needs, returned once by CreateClient
// and RotateClientKey.
type ClientBundle struct {
	// Entry is the registry record (no secrets).
	Entry ClientEntry `json:"entry"`
	// Config is ready for NewClient; it holds the private keys.
	Config ClientConfig `json:"config"`
	// WireGuardConfig is a standard WireGuard .conf, when the hub runs WireGuard.
	WireGuardConfig string `json:"wireGuardConfig,omitempty"`
	// Secrets are the client's private keys, shown only here.
	Secrets ClientSecrets `json:"secrets"`
}

// maxConns is how many sessions the client may hold at once.
func (re *regEntry) maxConns() int {
	if re.entry.Security == nil {
		return 1
	}
	return max(re.entry.Security.MaxConnections, 1)
}

// expired reports whether an ExpiresAt has come by now; the zero time never
// expires.
func expired(at, now time.Time) bool { return !at.IsZero() && !now.Before(at) }

// active reports whether the client may hold sessions now: enabled and not expired.
func (e *ClientEntry) active(now time.Time) bool { return e.Enabled && !expired(e.ExpiresAt, now) }

// checkEntry validates a registry record read from a store or a config file.
func (s *Server) checkEntry(field string, e *ClientEntry) (*compiledSecurity, error) {
	if why := validClientID(e.ClientID); why != "" {
		return nil, configErr(field+".clientId", e.ClientID, why)
	}
	if e.PublicKey.IsZero() {
		return nil, configErr(field+".publicKey", "", "required")
	}
	if why := s.checkAddr(e.AssignedIP); why != "" {
		return nil, configErr(field+".assignedIp", e.AssignedIP.String(), why)
	}
	if e.Priority < 0 || e.Priority > 7 {
		return nil, configErr(field+".priority", fmt.Sprint(e.Priority), "must be 0-7")
	}
	if err := s.checkRateLimit(field+".security", e.Security); err != nil {
		return nil, err
	}
	return compileSecurity(field+".security", e.Security)
}

// checkAddr says why ip cannot be a client address, or "".
func (s *Server) checkAddr(ip netip.Addr) string {
	switch {
	case !ip.IsValid():
		return "required"
	case !s.cfg.Subnet.Contains(ip):
		return "not inside subnet " + s.cfg.Subnet.String()
	case ip == s.cfg.Subnet.Addr():
		return "is the subnet's network address"
	case ip == s.hubIP:
		return "is the hub's own address"
	case ip == lastAddr(s.cfg.Subnet) && ip.Is4():
		return "is the subnet's broadcast address"
	}
	return ""
}

// loadRegistry fills the registry from the store, then adds the config's seed
// clients that the store does not have yet.
func (s *Server) loadRegistry(ctx context.Context) error {
	stored, err := s.loadStored(ctx)
	if err != nil {
		return fmt.Errorf("warren: loading registry: %w", err)
	}
	reg := emptySnapshot()
	add := func(field string, e ClientEntry, version int64) error {
		sec, err := s.checkEntry(field, &e)
		if err != nil {
			return err
		}
		if _, dup := reg.byID[e.ClientID]; dup {
			return configErr(field+".clientId", e.ClientID, "duplicate client ID")
		}
		if other, dup := reg.byKey[e.PublicKey]; dup {
			return configErr(field+".publicKey", e.PublicKey.String(), "already used by client "+other.entry.ClientID)
		}
		if other, dup := reg.byIP[e.AssignedIP]; dup {
			return configErr(field+".assignedIp", e.AssignedIP.String(), "already assigned to client "+other.entry.ClientID)
		}
		if other, dup := reg.byWG[e.WGPublicKey]; dup && !e.WGPublicKey.IsZero() {
			// WireGuard knows a peer by its key: two clients cannot share one.
			return configErr(field+".wgPublicKey", e.WGPublicKey.String(), "already used by client "+other.entry.ClientID)
		}
		if e.WGPublicKey == s.cfg.WGPrivateKey.PublicKey() && !s.cfg.WGPrivateKey.IsZero() {
			return configErr(field+".wgPublicKey", e.WGPublicKey.String(), "is the hub's own WireGuard key")
		}
		reg.insert(&regEntry{entry: e.clone(), sec: sec, version: version})
		return nil
	}
	for i, se := range stored {
		if err := add(fmt.Sprintf("store[%d]", i), se.Entry, se.Version); err != nil {
			return err
		}
	}
	var seeds []ClientEntry
	for i, e := range s.cfg.Clients {
		if _, ok := reg.byID[e.ClientID]; ok {
			continue
		}
		if e.CreatedAt.IsZero() {
			e.CreatedAt = time.Now().UTC()
			e.UpdatedAt = e.CreatedAt
		}
		if err := add(fmt.Sprintf("clients[%d]", i), e, 0); err != nil {
			return err
		}
		seeds = append(seeds, e)
	}
	for _, e := range seeds {
		if s.vstore == nil {
			if err := s.store.Put(ctx, e); err != nil {
				return fmt.Errorf("warren: storing seed client %s: %w", e.ClientID, err)
			}
			continue
		}
		// Another hub may have stored the same seed since the load: the
		// one stored first stays, and the watch brings it here.
		v, err := s.vstore.Create(ctx, e)
		switch {
		case errors.Is(err, ErrClientExists):
			reg.remove(reg.byID[e.ClientID])
		case err != nil:
			return fmt.Errorf("warren: storing seed client %s: %w", e.ClientID, err)
		default:
			reg.byID[e.ClientID].version = v
		}
	}
	s.reg = newRegistry(reg)
	return nil
}

// loadStored reads the store, with versions when it keeps them.
func (s *Server) loadStored(ctx context.Context) ([]StoredEntry, error) {
	if s.vstore != nil {
		return s.vstore.LoadVersions(ctx)
	}
	list, err := s.store.Load(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]StoredEntry, len(list))
	for i, e := range list {
		out[i].Entry = e
	}
	return out, nil
}

// CreateClient registers a new client: it makes its Noise and WireGuard keys,
// assigns the next free address of the subnet and returns a bundle with a
// ready ClientConfig and the secrets, which the hub does not keep.
//
// The bundle's config uses a transport the hub runs (see transportMode) and
// the addresses its listeners are bound to. A listener configured with port
// 0 has no port before Start, so create clients after Start, or give fixed
// ports (and PublicEndpoint when clients reach the hub by another name).
func (s *Server) CreateClient(ctx context.Context, spec ClientSpec) (*ClientBundle, error) {
	if why := validClientID(spec.ClientID); why != "" {
		return nil, configErr("clientId", spec.ClientID, why)
	}
	sec, err := compileSecurity("security", spec.Security)
	if err != nil {
		return nil, err
	}
	if err := s.checkRateLimit("security", spec.Security); err != nil {
		return nil, err
	}
	if spec.Priority < 0 || spec.Priority > 7 {
		return nil, configErr("priority", fmt.Sprint(spec.Priority), "must be 0-7")
	}
	if !spec.ExpiresAt.IsZero() && !spec.ExpiresAt.After(time.Now()) {
		return nil, configErr("expiresAt", spec.ExpiresAt.Format(time.RFC3339), "is in the past")
	}
	switch spec.ForwardingMode {
	case "", ForwardTesting, ForwardNetstack, ForwardSocket, ForwardTUN:
	default:
		return nil, configErr("forwardingMode", string(spec.ForwardingMode), "must be tun, netstack or testing")
	}
	noiseKeys, err := GenerateKeypair()
	if err != nil {
		return nil, err
	}
	wgKeys, err := GenerateWGKeypair()
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	e := ClientEntry{
		ClientID:                spec.ClientID,
		PublicKey:               noiseKeys.PublicKey,
		WGPublicKey:             wgKeys.PublicKey,
		Security:                spec.Security,
		Priority:                spec.Priority,
		ServerDefinedClientTags: spec.ServerDefinedClientTags,
		Description:             spec.Description,
		Enabled:                 true,
		ExpiresAt:               spec.ExpiresAt,
		CreatedAt:               now,
		UpdatedAt:               now,
	}
	e = e.clone()

	if err := s.addEntry(ctx, &e, sec); err != nil {
		return nil, err
	}
	s.wgSync(e.ClientID)
	s.expiryChanged()
	s.log.Info("client created", "client", e.ClientID, "ip", e.AssignedIP)
	return s.bundle(e.clone(), ClientSecrets{NoisePrivateKey: noiseKeys.PrivateKey, WGPrivateKey: wgKeys.PrivateKey}, spec.ForwardingMode), nil
}

// addEntry assigns e the next free address, stores it and adds it to the
// registry; e.AssignedIP is set on return. With a VersionedStore the store
// assigns the address atomically: an address another hub took meanwhile is
// refused with ErrAddressTaken, and the next free one is tried.
func (s *Server) addEntry(ctx context.Context, e *ClientEntry, sec *compiledSecurity) error {
	return s.reg.update(func(cur *regSnapshot) (*regSnapshot, error) {
		if _, ok := cur.byID[e.ClientID]; ok {
			return nil, fmt.Errorf("%w: %s", ErrClientExists, e.ClientID)
		}
		var taken map[netip.Addr]bool
		var version int64
		for {
			ip, err := s.freeAddr(cur, taken)
			if err != nil {
				return nil, err
			}
			e.AssignedIP = ip
			if s.vstore == nil {
				err = s.store.Put(ctx, *e)
			} else {
				version, err = s.vstore.Create(ctx, *e)
			}
			if errors.Is(err, ErrAddressTaken) {
				if taken == nil {
					taken = make(map[netip.Addr]bool)
				}
				taken[ip] = true
				continue
			}
			if errors.Is(err, ErrClientExists) {
				return nil, err
			}
			if err != nil {
				return nil, fmt.Errorf("warren: storing client %s: %w", e.ClientID, err)
			}
			break
		}
		next := cur.withClients()
		next.insert(&regEntry{entry: *e, sec: sec, version: version})
		return next, nil
	})
}

// freeAddr returns the lowest client address of sn that neither a client nor
// a static WireGuard peer holds, nor taken (the store refused it).
func (s *Server) freeAddr(sn *regSnapshot, taken map[netip.Addr]bool) (netip.Addr, error) {
	for ip := s.hubIP.Next(); ip.IsValid() && s.cfg.Subnet.Contains(ip); ip = ip.Next() {
		if s.checkAddr(ip) != "" || taken[ip] {
			continue
		}
		_, client := sn.byIP[ip]
		_, static := sn.static[ip]
		if !client && !static {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: every address of %s is assigned", ErrPoolExhausted, s.cfg.Subnet)
}

// lastAddr returns the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		for j := 0; j < 8; j++ {
			if i*8+j >= bits {
				b[i] |= 0x80 >> j
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// bundle builds a client's bundle; secrets may be zero (exports). Its
// transport is one the hub runs, so the config connects as it is:
// WebSocket when it runs (with quicAddr when QUIC runs too, so a client can
// choose auto or quic, which suits lossy paths; bench's TCP cases compare
// the two), else QUIC, else WireGuard. The WireGuard
// fields and .conf are there whenever the hub runs WireGuard.
func (s *Server) bundle(e ClientEntry, secrets ClientSecrets, mode ForwardingMode) *ClientBundle {
	cfg := ClientConfig{
		ServerPublicKey: s.cfg.PublicKey,
		PrivateKey:      secrets.NoisePrivateKey,
		PublicKey:       e.PublicKey,
		ServerCertHash:  s.certHash,
		ForwardingMode:  mode,
		WGPrivateKey:    secrets.WGPrivateKey,
		WGAddress:       netip.PrefixFrom(e.AssignedIP, e.AssignedIP.BitLen()),
		DNS:             slices.Clone(s.cfg.DNS),
		MTU:             s.cfg.MTU,
	}
	switch {
	case s.cfg.runsWS():
		cfg.Transport = ClientWebSocket
		cfg.ServerURL = s.wsURL()
		if s.cfg.runsQUIC() {
			cfg.QUICAddr = s.quicEndpoint()
		}
	case s.cfg.runsQUIC():
		cfg.Transport = ClientQUIC
		cfg.ServerURL = s.quicEndpoint()
		cfg.QUICAddr = cfg.ServerURL
	default: // transportMode wireguard: nothing listens for Noise sessions
		cfg.Transport = ClientWireGuard
		cfg.ServerCertHash = ""
	}
	if s.cfg.BundleServerCA != "" && cfg.Transport != ClientWireGuard {
		// The CA verifies the certificate: a pin would replace that.
		cfg.ServerCA, cfg.ServerCertHash = s.cfg.BundleServerCA, ""
	}
	b := &ClientBundle{Entry: e, Secrets: secrets}
	if s.cfg.runsWG() {
		cfg.WGServerPublicKey = s.cfg.WGPrivateKey.PublicKey()
		cfg.WGEndpoint = s.wgEndpoint()
		cfg.WGAllowedIPs = []netip.Prefix{s.cfg.Subnet}
		cfg.WGPersistentKeepalive = wgKeepalive
		if !secrets.WGPrivateKey.IsZero() {
			// Rendering cannot fail for an entry the registry accepted.
			b.WireGuardConfig, _ = s.wireGuardConf(e, secrets.WGPrivateKey)
		}
	}
	b.Config = cfg
	return b
}

// wsURL is the WebSocket URL written into bundles.
func (s *Server) wsURL() string {
	if strings.Contains(s.cfg.PublicEndpoint, "://") {
		return s.cfg.PublicEndpoint
	}
	return "wss://" + s.endpoint()
}

// endpoint is the host[:port] written into bundles.
func (s *Server) endpoint() string {
	if ep := s.cfg.PublicEndpoint; ep != "" {
		if u, err := url.Parse(ep); err == nil && strings.Contains(ep, "://") {
			return u.Host
		}
		return ep
	}
	addr := s.cfg.ListenAddr
	if a := s.Addr(); a != nil {
		addr = a.String()
	}
	ap, err := netip.ParseAddrPort(addr)
	if err == nil && ap.Addr().IsUnspecified() {
		// A wildcard bind is not an address a client can dial; loopback is the
		// one address sure to reach this listener. Set PublicEndpoint otherwise.
		lo := netip.MustParseAddr("127.0.0.1")
		if ap.Addr().Is6() && !ap.Addr().Is4In6() {
			lo = netip.IPv6Loopback()
		}
		return netip.AddrPortFrom(lo, ap.Port()).String()
	}
	return addr
}

// quicEndpoint is the host:port written into bundles for QUIC: the host of
// endpoint with the QUIC listener's port.
func (s *Server) quicEndpoint() string {
	ep := s.endpoint()
	var port string
	switch a := s.QUICAddr(); {
	case a != nil:
		_, port, _ = net.SplitHostPort(a.String())
	case s.cfg.QUICListenAddr != "":
		_, port, _ = net.SplitHostPort(s.cfg.QUICListenAddr)
	default:
		// Before Start QUIC's port is the one it will bind: ListenAddr's.
		_, port, _ = net.SplitHostPort(s.cfg.ListenAddr)
	}
	host, _, err := net.SplitHostPort(ep)
	if err != nil {
		host = ep
	}
	return net.JoinHostPort(host, port)
}

// GetClient returns the registry record of a client.
func (s *Server) GetClient(ctx context.Context, id string) (ClientEntry, error) {
	re, ok := s.reg.lookupID(id)
	if !ok {
		return ClientEntry{}, fmt.Errorf("%w: %q", ErrUnknownClient, id)
	}
	return re.entry.clone(), nil
}

// ListRegisteredClients returns every registered client, sorted by ID.
func (s *Server) ListRegisteredClients(ctx context.Context) ([]ClientEntry, error) {
	sn := s.reg.load()
	out := make([]ClientEntry, 0, len(sn.byID))
	for _, re := range sn.byID {
		out = append(out, re.entry.clone())
	}
	slices.SortFunc(out, func(a, b ClientEntry) int { return strings.Compare(a.ClientID, b.ClientID) })
	return out, nil
}

// maxConflicts is how often a conditional write is retried after another
// hub changed the same entry first.
const maxConflicts = 16

// mutate applies change to a copy of a client's entry, validates it, stores it
// and only then makes it the registry's. It returns the new entry.
//
// With a VersionedStore the write commits only if the entry is still the
// version change saw; when another hub changed it first, change runs again
// on the stored entry, and what that other change did to live sessions
// (a rotated key, a disabled client) is applied here too.
func (s *Server) mutate(ctx context.Context, id string, change func(e *ClientEntry) error) (ClientEntry, error) {
	var e ClientEntry
	var old, now *regEntry
	refreshed := false
	err := s.reg.update(func(cur *regSnapshot) (*regSnapshot, error) {
		re, ok := cur.byID[id]
		if !ok {
			return nil, fmt.Errorf("%w: %q", ErrUnknownClient, id)
		}
		old = re
		base := re.entry
		version := re.version
		for attempt := 0; ; attempt++ {
			e = base.clone()
			if err := change(&e); err != nil {
				return nil, err
			}
			sec, err := compileSecurity("security", e.Security)
			if err != nil {
				return nil, err
			}
			if err := s.checkRateLimit("security", e.Security); err != nil {
				return nil, err
			}
			e.UpdatedAt = time.Now().UTC()
			if s.vstore == nil {
				if err := s.store.Put(ctx, e); err != nil {
					return nil, fmt.Errorf("warren: storing client %s: %w", id, err)
				}
				now = &regEntry{entry: e, sec: sec}
				break
			}
			v, err := s.vstore.Update(ctx, e, version)
			if err == nil {
				now = &regEntry{entry: e, sec: sec, version: v}
				break
			}
			if !errors.Is(err, ErrConflict) || attempt == maxConflicts {
				return nil, fmt.Errorf("warren: storing client %s: %w", id, err)
			}
			se, err := s.vstore.Get(ctx, id)
			if err != nil {
				return nil, fmt.Errorf("warren: reading client %s: %w", id, err)
			}
			base, version = se.Entry, se.Version
			refreshed = true
		}
		next := cur.withClients()
		next.remove(re)
		next.insert(now)
		return next, nil
	})
	if err != nil {
		return ClientEntry{}, err
	}
	if refreshed {
		// What another hub changed in between, the caller does not know of.
		s.applyChange(old, now)
	}
	return e.clone(), nil
}

// UpdateClient changes a client's description, tags, security or expiry.
// Live sessions follow at once: they take the new security lists; an
// ExpiresAt already past ends them and removes the client's WireGuard peer
// (a later one ends them then); a lower MaxConnections ends the oldest
// sessions beyond it.
func (s *Server) UpdateClient(ctx context.Context, id string, u ClientUpdate) (ClientEntry, error) {
	e, err := s.mutate(ctx, id, func(e *ClientEntry) error {
		if u.Description != nil {
			e.Description = *u.Description
		}
		if u.ServerDefinedClientTags != nil {
			e.ServerDefinedClientTags = cloneStrings(*u.ServerDefinedClientTags)
		}
		if u.Security != nil {
			sc := u.Security.clone()
			e.Security = &sc
		}
		if u.Priority != nil {
			if *u.Priority < 0 || *u.Priority > 7 {
				return configErr("priority", fmt.Sprint(*u.Priority), "must be 0-7")
			}
			e.Priority = *u.Priority
		}
		if u.ExpiresAt != nil {
			e.ExpiresAt = *u.ExpiresAt
		}
		return nil
	})
	if err != nil {
		return ClientEntry{}, err
	}
	s.applySecurity(id)
	s.applyLimits(id)
	s.wgSync(id)
	if expired(e.ExpiresAt, time.Now()) {
		s.dropSessions(id, reasonExpired)
	}
	s.expiryChanged()
	limit := 1
	if e.Security != nil {
		limit = max(e.Security.MaxConnections, 1)
	}
	s.limitSessions(id, limit, reasonLimitLowered)
	return e, nil
}

// applySecurity gives a client's live sessions the security lists the
// registry holds for it now. It holds the writer lock, so no update is
// published between the read and the store: of two UpdateClient calls
// racing here, the sessions keep the lists of the one published last.
func (s *Server) applySecurity(id string) {
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	if re, ok := s.reg.lookupID(id); ok {
		s.updateSessions(id, re.sec)
	}
}

// EnableClient lets a disabled client connect again.
func (s *Server) EnableClient(ctx context.Context, id string) error {
	if _, err := s.mutate(ctx, id, func(e *ClientEntry) error { e.Enabled = true; return nil }); err != nil {
		return err
	}
	s.wgSync(id)
	return nil
}

// DisableClient refuses the client's future handshakes and ends its live sessions.
func (s *Server) DisableClient(ctx context.Context, id string) error {
	if _, err := s.mutate(ctx, id, func(e *ClientEntry) error { e.Enabled = false; return nil }); err != nil {
		return err
	}
	s.wgSync(id)
	s.dropSessions(id, reasonDisabled)
	return nil
}

// RotateClientKey gives a client new Noise and WireGuard keys. The old keys are
// refused from then on and the client's live sessions end.
func (s *Server) RotateClientKey(ctx context.Context, id string) (*ClientBundle, error) {
	noiseKeys, err := GenerateKeypair()
	if err != nil {
		return nil, err
	}
	wgKeys, err := GenerateWGKeypair()
	if err != nil {
		return nil, err
	}
	var old Key
	e, err := s.mutate(ctx, id, func(e *ClientEntry) error {
		old = e.PublicKey
		e.PublicKey = noiseKeys.PublicKey
		e.WGPublicKey = wgKeys.PublicKey
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.replay.Forget(old)
	s.wgSync(id)
	s.dropSessions(id, reasonKeyRotated)
	s.log.Info("client key rotated", "client", id)
	return s.bundle(e, ClientSecrets{NoisePrivateKey: noiseKeys.PrivateKey, WGPrivateKey: wgKeys.PrivateKey}, ""), nil
}

// ExportClientConfig returns a client's configuration without secrets:
// "native" is its ClientConfig as JSON (private keys left empty for the
// holder of the bundle to fill in); "wireguard" a WireGuard .conf.
func (s *Server) ExportClientConfig(ctx context.Context, id string, format ExportFormat) (string, error) {
	e, err := s.GetClient(ctx, id)
	if err != nil {
		return "", err
	}
	switch format {
	case ExportNative, "":
		b, err := json.MarshalIndent(s.bundle(e, ClientSecrets{}, "").Config, "", "  ")
		if err != nil {
			return "", fmt.Errorf("warren: encoding config: %w", err)
		}
		return string(b), nil
	case ExportWireGuard:
		return s.wireGuardConf(e, Key{})
	default:
		return "", configErr("format", string(format), "must be native or wireguard")
	}
}

// RemoveClient deletes a client from the registry, ends its sessions and frees its address.
func (s *Server) RemoveClient(ctx context.Context, id string) error {
	var gone *regEntry
	err := s.reg.update(func(cur *regSnapshot) (*regSnapshot, error) {
		re, ok := cur.byID[id]
		if !ok {
			return nil, fmt.Errorf("%w: %q", ErrUnknownClient, id)
		}
		if err := s.deleteStored(ctx, re); err != nil {
			return nil, err
		}
		next := cur.withClients()
		next.remove(re)
		gone = re
		return next, nil
	})
	if err != nil {
		return err
	}
	s.replay.Forget(gone.entry.PublicKey)
	s.wgSync(id)
	s.dropSessions(id, reasonRemoved)
	s.forgetClient(id)
	return nil
}

// deleteStored deletes a client from the store; with a VersionedStore,
// whatever its version there.
func (s *Server) deleteStored(ctx context.Context, re *regEntry) error {
	id := re.entry.ClientID
	if s.vstore == nil {
		if err := s.store.Delete(ctx, id); err != nil {
			return fmt.Errorf("warren: deleting client %s: %w", id, err)
		}
		return nil
	}
	version := re.version
	for attempt := 0; ; attempt++ {
		err := s.vstore.Remove(ctx, id, version)
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrConflict) || attempt == maxConflicts {
			return fmt.Errorf("warren: deleting client %s: %w", id, err)
		}
		se, err := s.vstore.Get(ctx, id)
		if err != nil {
			return fmt.Errorf("warren: deleting client %s: %w", id, err)
		}
		version = se.Version
	}
}
