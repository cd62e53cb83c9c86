package warren

import (
	"cmp"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/warrenvpn/warren/codec"
	wsession "github.com/warrenvpn/warren/session"
	"github.com/warrenvpn/warren/transport/wg"
	"github.com/warrenvpn/warren/wgconfig"
)

// WireGuard on the hub: one wireguard-go device whose tun.Device is a bridge
// into the packet pipeline (transport/wg). Every registered client that is
// enabled is a peer of the device with AllowedIPs = its address; static peers
// (ServerConfig.WGPeers, AddWGPeer) are peers whose first AllowedIP is their
// tunnel address. wireguard-go drops a packet whose source is outside its
// peer's AllowedIPs, so the source of a packet that reaches the pipeline
// names its client; the pipeline then applies the same anti-spoofing, policy,
// ACLs, engine and counters as for WebSocket sessions.
//
// A WireGuard session is a transport/wg Session (wgPeer) in the hub's one
// session table, beside the WebSocket and QUIC ones: found by its tunnel
// address in the route table, sent batches of packets, ended with a reason.
// It begins with the peer's first packet or completed handshake
// (ClientConnected) and ends when the peer has been silent past the dead-peer
// timeout, or is disabled, expired, rotated or removed (ClientDisconnected);
// the last four also remove the peer from the device, so its handshakes
// fail. The peer is one session of its client, counted
// toward MaxConnections with the client's WebSocket and QUIC sessions: when a
// newer session replaces it, its next packet starts it again (replacing the
// oldest in turn), so a client that uses WireGuard and another transport at
// the same time needs MaxConnections 2.
//
// Source-address ACLs (DESIGN §4, two phases, as on the other transports):
// ServerConfig.ConnectionIPBlockList is the device's wg.Config.Reject, so a
// datagram from a blocked source is dropped before wireguard-go parses it
// (counted in Statistics.ConnectionsRejected). A client's IPAllowList and
// IPBlockList are checked against its peer's endpoint, the address
// wireguard-go last received an authenticated packet from. The endpoint is
// cached by tunnel address (wgEndpoints) from the device's peer events (Up,
// and Up with Roamed when an up peer changes address), read from the device
// once when a session starts with nothing cached, and dropped on Down; no
// packet asks the device. A session does not start while the endpoint is
// not allowed (or unknown, for a client with lists): the peer's packets are
// dropped as ACL drops. A live session whose peer roams to a disallowed
// endpoint, or whose client's lists change (UpdateClient) so that its
// endpoint is no longer allowed, ends (ClientDisconnected, code refused),
// so nothing is routed to it either; its later packets are ACL drops until
// it is heard from an allowed address again, when its next packet starts a
// new session. The device notices a roam at its next poll (every second):
// packets from a new, disallowed endpoint can pass for up to that long.

// wgKeepalive is the PersistentKeepalive written into client .conf files.
const wgKeepalive = 25

// runsWG reports whether the configuration runs the WireGuard transport.
func (c *ServerConfig) runsWG() bool {
	switch c.TransportMode {
	case TransportWireGuard:
		return true
	case TransportAll, TransportBoth:
		return !c.WGPrivateKey.IsZero()
	}
	return false
}

// startWG brings up the device and installs every peer. Call with s.mu held.
func (s *Server) startWG() error {
	dev, err := wg.New(wg.Config{
		PrivateKey:      s.cfg.WGPrivateKey,
		ListenPort:      s.cfg.WGListenPort,
		MTU:             s.cfg.MTU,
		ReceiveOffset:   s.wgReceive,
		PeerEvent:       s.wgPeerEvent,
		DeadPeerTimeout: cmp.Or(s.telemetry.DeadAfter, deadPeerTimeout),
		Reject:          s.wgReject(),
		Logger:          s.log.With("component", "wireguard"),
	})
	if err != nil {
		return fmt.Errorf("starting WireGuard: %w", err)
	}
	// Holding wgMu until the device is published, a client created
	// meanwhile is either in the list below or synced by its own wgSync.
	s.wgMu.Lock()
	defer s.wgMu.Unlock()
	reg := s.reg.load()
	static := slices.Collect(maps.Values(reg.static))
	ids := slices.Collect(maps.Keys(reg.byID))
	for _, p := range static {
		if err := installStaticPeer(dev, p); err != nil {
			dev.Close()
			return err
		}
	}
	for _, id := range ids {
		s.syncPeer(dev, id)
	}
	s.wgDev.Store(dev)
	return nil
}

// wgReject is the device's source filter: ConnectionIPBlockList, or nil when
// it is empty (an unwrapped Bind keeps wireguard-go's sticky sockets).
func (s *Server) wgReject() func(netip.Addr) bool {
	if len(s.cfg.ConnectionIPBlockList) == 0 {
		return nil
	}
	return s.rejectConn
}

// stopWG closes the device after a failed Start. Call with s.mu held; it
// does not take wgMu, which is taken before mu.
func (s *Server) stopWG() {
	if dev := s.wgDev.Swap(nil); dev != nil {
		s.closeDevice(dev)
	}
	s.wgKeysMu.Lock()
	clear(s.wgKeys)
	s.wgKeysMu.Unlock()
}

// WGAddr returns the WireGuard UDP address, or nil when WireGuard is not running.
func (s *Server) WGAddr() net.Addr {
	dev := s.wgDevice()
	if dev == nil {
		return nil
	}
	return &net.UDPAddr{IP: net.IPv4zero, Port: int(dev.Port())}
}

// wgSync makes the device's peer for a registered client match the registry:
// present with the client's current key while it is enabled and not expired,
// absent otherwise. (A live session whose endpoint new remote lists refuse
// is ended by updateSessions, as on the other transports.)
func (s *Server) wgSync(id string) {
	s.wgMu.Lock()
	defer s.wgMu.Unlock()
	if dev := s.wgDevice(); dev != nil {
		s.syncPeer(dev, id)
	}
}

// syncPeer is wgSync on dev. Call with s.wgMu held.
func (s *Server) syncPeer(dev *wg.Device, id string) {
	var want Key
	var ip netip.Addr
	if re, ok := s.reg.lookupID(id); ok && re.entry.active(time.Now()) {
		want, ip = re.entry.WGPublicKey, re.entry.AssignedIP
	}
	have := s.installedKey(id)
	if have == want {
		return
	}
	if !have.IsZero() {
		s.wgKeysMu.Lock()
		delete(s.wgKeys, id)
		s.wgKeysMu.Unlock()
		if err := s.removePeer(dev, have); err != nil {
			s.log.Warn("removing WireGuard peer", "client", id, "err", err)
		}
	}
	if !want.IsZero() {
		err := dev.AddPeer(wg.Peer{PublicKey: want, AllowedIPs: []netip.Prefix{netip.PrefixFrom(ip, ip.BitLen())}})
		if err != nil {
			s.log.Error("adding WireGuard peer", "client", id, "err", err)
			return
		}
		s.wgKeysMu.Lock()
		s.wgKeys[id] = want
		s.wgKeysMu.Unlock()
	}
}

// installedKey returns the WireGuard key installed for a client, or zero.
func (s *Server) installedKey(id string) Key {
	s.wgKeysMu.Lock()
	defer s.wgKeysMu.Unlock()
	return s.wgKeys[id]
}

func (s *Server) wgDevice() *wg.Device { return s.wgDev.Load() }

// removePeer removes a peer from dev. wireguard-go waits for the peer's
// receive goroutine, which may be in the pipeline: wgRemoving tells the
// pipeline not to ask the device for its peers meanwhile (peerEndpoint).
func (s *Server) removePeer(dev *wg.Device, key Key) error {
	s.wgRemoving.Lock()
	defer s.wgRemoving.Unlock()
	return dev.RemovePeer(key)
}

// closeDevice closes dev; like removePeer it waits for receive goroutines.
func (s *Server) closeDevice(dev *wg.Device) error {
	s.wgRemoving.Lock()
	defer s.wgRemoving.Unlock()
	return dev.Close()
}

// peerEndpoint returns the endpoint of a peer of dev, or zero when the device
// cannot say without waiting: the pipeline calls it on wireguard-go's receive
// goroutines, which a peer's removal waits for.
func (s *Server) peerEndpoint(dev *wg.Device, key Key) netip.AddrPort {
	if !s.wgRemoving.TryRLock() {
		return netip.AddrPort{}
	}
	defer s.wgRemoving.RUnlock()
	for _, p := range dev.Peers() {
		if Key(p.PublicKey) == key {
			return p.Endpoint
		}
	}
	return netip.AddrPort{}
}

// wgReceive takes packets from WireGuard peers into the pipeline.
// wireguard-go hands one peer's packets per call; the batch is still split
// by source so each run goes to its own session.
func (s *Server) wgReceive(bufs [][]byte, offset int) {
	for len(bufs) > 0 {
		src := packetSource(bufs[0][offset:])
		n := 1
		for n < len(bufs) && packetSource(bufs[n][offset:]) == src {
			n++
		}
		run := bufs[:n]
		bufs = bufs[n:]
		c, denied := s.wgSession(src)
		switch {
		case denied:
			s.stats.acl.Add(uint64(len(run)))
			continue
		case c == nil:
			s.stats.noRoute.Add(uint64(len(run)))
			continue
		}
		if !c.checkRemote(c.ss.sec.Load()) {
			// Its lists changed under a session that was starting.
			s.stats.acl.Add(uint64(len(run)))
			continue
		}
		c.ReceivedOffset(run, offset)
		s.route(c.ss, run, offset, nil)
	}
}

func packetSource(b []byte) netip.Addr {
	if len(b) >= 20 && b[0]>>4 == 4 {
		return netip.AddrFrom4([4]byte(b[12:16]))
	}
	if len(b) >= 40 && b[0]>>4 == 6 {
		return netip.AddrFrom16([16]byte(b[8:24]))
	}
	return netip.Addr{}
}

// wgSession returns the WireGuard session for a tunnel address, starting
// one for a registered client that may connect now, or a static peer, that
// has none yet. denied reports a client whose IPAllowList / IPBlockList
// refuse its peer's endpoint: its packets are ACL drops.
//
// A WireGuard session is in the route table like any other: the route for
// its address is the session, unless a newer session of the same client
// (MaxConnections 2 or more) holds it, in which case the client's sessions
// are searched under s.mu (wgSessionOf).
func (s *Server) wgSession(ip netip.Addr) (c *wgPeer, denied bool) {
	if ss := (*s.routes.Load())[ip]; ss != nil {
		if c, ok := ss.c.(*wgPeer); ok {
			return c, false
		}
	}
	dev := s.wgDevice()
	if dev == nil {
		return nil, false
	}
	s.wgSessMu.Lock()
	defer s.wgSessMu.Unlock()
	if c := s.wgSessionOf(ip); c != nil {
		return c, false
	}
	ss := &session{srv: s, ip: ip, transport: "wireguard", since: time.Now()}
	var wgKey Key
	reg := s.reg.load()
	re, isClient := reg.byIP[ip]
	static, isStatic := reg.static[ip]
	switch {
	case isClient:
		e := re.entry
		if e.WGPublicKey.IsZero() || s.installedKey(e.ClientID) != e.WGPublicKey {
			return nil, false
		}
		if !e.active(ss.since) {
			// The janitor has not removed the peer yet; no session
			// starts meanwhile.
			s.expiryChanged()
			return nil, false
		}
		ss.id, ss.key = e.ClientID, e.PublicKey
		ss.sec.Store(re.sec)
		wgKey = e.WGPublicKey
	case isStatic:
		ss.id, ss.static = staticPeerID(static.PublicKey), true
		wgKey = static.PublicKey
	default:
		return nil, false
	}
	// The cache follows the peer's events; with nothing cached yet (the
	// first packet can come before the poll that reports the peer Up) the
	// device is asked once.
	remote, cached := s.wgEndpoints[ip]
	if !cached {
		if remote = s.peerEndpoint(dev, wgKey); remote.IsValid() {
			s.wgEndpoints[ip] = remote
		}
	}
	c = &wgPeer{Session: dev.NewSession(wgKey, remote), srv: s, ss: ss}
	ss.c = c
	if !wgRemoteAllowed(ss.sec.Load(), remote) {
		s.log.Debug("WireGuard peer's endpoint not allowed", "client", ss.id, "remote", remote)
		return nil, true
	}
	if !s.register(ss) {
		c.close(reasonShutdown, false)
		return nil, false
	}
	if c.Closed() {
		return nil, false // register refused it: the client changed meanwhile
	}
	if !c.checkRemote(ss.sec.Load()) {
		return nil, true // register gave it the client's newer lists
	}
	return c, false
}

// wgSessionOf returns the live WireGuard session for a tunnel address, or
// nil: the route's, or one of the same client's older sessions that a newer
// one on another transport hides from the route table.
func (s *Server) wgSessionOf(ip netip.Addr) *wgPeer {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := (*s.routes.Load())[ip]
	if ss == nil {
		return nil
	}
	for _, o := range s.sessions[ss.id] {
		if c, ok := o.c.(*wgPeer); ok && o.ip == ip {
			return c
		}
	}
	return nil
}

// wgRemoteAllowed reports whether a client's remote lists allow a WireGuard
// peer at ep. An unknown endpoint passes only a client without lists.
func wgRemoteAllowed(sec *compiledSecurity, ep netip.AddrPort) bool {
	if remoteUnrestricted(sec) {
		return true
	}
	return ep.IsValid() && sec.remote.allows(ep.Addr())
}

// remoteUnrestricted reports a client with no IPAllowList and no IPBlockList.
func remoteUnrestricted(sec *compiledSecurity) bool {
	return sec == nil || sec.remote == nil || (sec.remote.allowAll && sec.remote.block == nil)
}

// wgDirect hands p to the WireGuard device when dst is the address of an
// installed WireGuard peer that has no session: one that has handshaken but
// not sent a packet since, or whose session was ended while its peer stayed.
// wireguard-go routes it by AllowedIPs and sends it once it knows the peer's
// endpoint (the packet starts a handshake if needed). It reports false when
// dst is no such peer. Only the miss path of route and deliver calls it.
func (s *Server) wgDirect(dst netip.Addr, p []byte) bool {
	dev := s.wgDevice()
	if dev == nil || len(p) > s.cfg.MTU {
		return false
	}
	reg := s.reg.load()
	if re, ok := reg.byIP[dst]; ok {
		e := re.entry
		if e.WGPublicKey.IsZero() || s.installedKey(e.ClientID) != e.WGPublicKey {
			return false
		}
	} else if _, ok := reg.static[dst]; !ok {
		return false
	}
	one := [1][]byte{p}
	return dev.Send(one[:]) == nil
}

func staticPeerID(k [32]byte) string { return "wg-" + Key(k).String()[:8] }

// wgPeerEvent turns the device's peer events into sessions.
func (s *Server) wgPeerEvent(ev wg.PeerEvent) {
	key := Key(ev.PublicKey)
	var ip netip.Addr
	reg := s.reg.load()
	if re, ok := reg.byWG[key]; ok {
		ip = re.entry.AssignedIP
	}
	if a, ok := reg.staticByKey(key); ok {
		ip = a
	}
	if !ip.IsValid() {
		return
	}
	s.wgSessMu.Lock()
	if ev.Up && ev.Endpoint.IsValid() {
		s.wgEndpoints[ip] = ev.Endpoint
	} else if !ev.Up {
		// A peer that comes back is asked for its endpoint afresh.
		delete(s.wgEndpoints, ip)
	}
	s.wgSessMu.Unlock()
	if ev.Up {
		if c, _ := s.wgSession(ip); c != nil {
			if ev.Endpoint.IsValid() {
				c.SetRemote(ev.Endpoint)
			}
			c.checkRemote(c.ss.sec.Load()) // it may have roamed where its lists refuse it
		}
		return
	}
	// Under wgSessMu, so a session starting meanwhile is found.
	s.wgSessMu.Lock()
	c := s.wgSessionOf(ip)
	s.wgSessMu.Unlock()
	if c != nil {
		c.close(reasonDeadPeer, false)
	}
}

// wgPeer is a WireGuard session (transport/wg) as a conduit. The device
// routes a packet by its destination, which is the peer's address.
type wgPeer struct {
	*wg.Session
	srv *Server
	ss  *session
}

func (c *wgPeer) send(bufs [][]byte, offset int, _ *wsession.Lease) int {
	return c.SendOffset(bufs, offset)
}

func (c *wgPeer) remoteAddr() netip.AddrPort { return c.Remote() }

// checkRemote ends the session if sec's lists do not allow the peer's
// endpoint (an unknown one passes only a client without lists).
func (c *wgPeer) checkRemote(sec *compiledSecurity) bool {
	if remoteUnrestricted(sec) {
		return true
	}
	remote := c.Remote()
	if wgRemoteAllowed(sec, remote) {
		return true
	}
	c.close(closeReason{codec.DisconnectRefused, "remote address " + remote.Addr().String() + " not allowed"}, false)
	return false
}

// close ends the session. WireGuard has no message to tell the peer why;
// a peer that is still allowed starts a new session with its next packet.
func (c *wgPeer) close(reason closeReason, _ bool) {
	if c.Close() {
		c.srv.removeSession(c.ss, reason)
	}
}

func (c *wgPeer) counts() linkCounts {
	n := c.Counters()
	return linkCounts{
		bytesIn:    n.BytesIn,
		bytesOut:   n.BytesOut,
		packetsIn:  n.PacketsIn,
		packetsOut: n.PacketsOut,
		oversized:  n.Oversized,
	}
}

// lastSeen: the device reports dead peers itself (PeerEvent Down), counting
// the keepalives the pipeline never sees.
func (c *wgPeer) lastSeen() time.Time { return time.Now() }

// conflictError is a *ConfigError that also matches ErrClientExists: a
// static WireGuard peer's key or address that a client or another static
// peer already holds.
type conflictError struct{ *ConfigError }

func (e conflictError) Unwrap() []error { return []error{e.ConfigError, ErrClientExists} }

func conflict(field, value, reason string) error {
	return conflictError{configErr(field, value, reason)}
}

// loadStaticPeers checks ServerConfig.WGPeers and reserves their addresses
// and keys in the registry; Start installs them.
func (s *Server) loadStaticPeers() error {
	if len(s.cfg.WGPeers) > 0 && !s.cfg.runsWG() {
		return configErr("wgPeers", "", "WireGuard does not run: it needs wgPrivateKey and transportMode all, both or wireguard")
	}
	return s.reg.update(func(cur *regSnapshot) (*regSnapshot, error) {
		next := cur.withStatic()
		for i, p := range s.cfg.WGPeers {
			if _, _, err := s.reserveStaticPeer(next, fmt.Sprintf("wgPeers[%d]", i), p); err != nil {
				return nil, err
			}
		}
		return next, nil
	})
}

// AddWGPeer adds a static WireGuard peer that is not a registered client, or
// changes the one with the same key and address. Its one AllowedIP is its
// tunnel address: a single address inside Subnet that no client holds, and
// that CreateClient will not hand out while the peer exists. A key or address
// that a client or another static peer holds is refused with an error that
// matches both *ConfigError and ErrClientExists. Before Start the peer is
// kept, and Start installs it; on a hub that does not run WireGuard the
// error wraps ErrNotSupported.
func (s *Server) AddWGPeer(p WGPeer) error {
	if !s.cfg.runsWG() {
		return fmt.Errorf("warren: the hub does not run WireGuard: %w", ErrNotSupported)
	}
	s.wgMu.Lock()
	defer s.wgMu.Unlock()
	var prev WGPeer
	var had bool
	err := s.reg.update(func(cur *regSnapshot) (*regSnapshot, error) {
		next := cur.withStatic()
		var err error
		prev, had, err = s.reserveStaticPeer(next, "wgPeer", p)
		return next, err
	})
	if err != nil {
		return err
	}
	dev := s.wgDevice()
	if dev == nil {
		return nil
	}
	if err := installStaticPeer(dev, p); err != nil {
		// Static peers change only under wgMu, which is held: the
		// reservation is still there to undo.
		ip := p.AllowedIPs[0].Addr()
		_ = s.reg.update(func(cur *regSnapshot) (*regSnapshot, error) {
			next := cur.withStatic()
			if had {
				next.static[ip] = prev
			} else {
				delete(next.static, ip)
			}
			return next, nil
		})
		return fmt.Errorf("warren: %w", err)
	}
	return nil
}

// reserveStaticPeer checks a static peer against sn, a snapshot made by
// withStatic, and records it there, returning the peer it replaces, if any.
// Call inside registry.update.
func (s *Server) reserveStaticPeer(sn *regSnapshot, field string, p WGPeer) (prev WGPeer, had bool, err error) {
	if err := s.checkStaticPeer(field, p); err != nil {
		return WGPeer{}, false, err
	}
	ip := p.AllowedIPs[0].Addr()
	if re, ok := sn.byWG[p.PublicKey]; ok {
		return WGPeer{}, false, conflict(field+".publicKey", p.PublicKey.String(), "is the WireGuard key of client "+re.entry.ClientID)
	}
	if re, ok := sn.byIP[ip]; ok {
		return WGPeer{}, false, conflict(field+".allowedIps[0]", ip.String(), "assigned to client "+re.entry.ClientID)
	}
	for a, other := range sn.static {
		switch {
		case a == ip && other.PublicKey != p.PublicKey:
			return WGPeer{}, false, conflict(field+".allowedIps[0]", ip.String(), "already the address of static peer "+other.PublicKey.String())
		case a != ip && other.PublicKey == p.PublicKey:
			return WGPeer{}, false, conflict(field+".publicKey", p.PublicKey.String(), "already the key of static peer "+a.String()+" (remove it first)")
		}
	}
	prev, had = sn.static[ip]
	p.AllowedIPs = slices.Clone(p.AllowedIPs)
	sn.static[ip] = p
	return prev, had, nil
}

// checkStaticPeer validates a static peer's fields; field names it in errors
// ("wgPeers[2]").
func (s *Server) checkStaticPeer(field string, p WGPeer) error {
	if p.PublicKey.IsZero() {
		return configErr(field+".publicKey", "", "required")
	}
	if p.PublicKey == s.cfg.WGPrivateKey.PublicKey() {
		return configErr(field+".publicKey", p.PublicKey.String(), "is the hub's own WireGuard key")
	}
	switch len(p.AllowedIPs) {
	case 0:
		return configErr(field+".allowedIps", "", "needs the peer's tunnel address")
	case 1:
	default:
		return configErr(field+".allowedIps[1]", p.AllowedIPs[1].String(), "a static peer has one AllowedIP, its tunnel address: routing other prefixes to it is not built yet")
	}
	first := p.AllowedIPs[0]
	if !first.IsValid() || first.Bits() != first.Addr().BitLen() {
		return configErr(field+".allowedIps[0]", first.String(), "must be a single address (/32 or /128): the peer's tunnel address")
	}
	if why := s.checkAddr(first.Addr()); why != "" {
		return configErr(field+".allowedIps[0]", first.String(), why)
	}
	if p.Endpoint != "" {
		ap, err := netip.ParseAddrPort(p.Endpoint)
		switch {
		case err != nil:
			return configErr(field+".endpoint", p.Endpoint, "must be ip:port")
		case ap.Addr().IsUnspecified() || ap.Port() == 0:
			return configErr(field+".endpoint", p.Endpoint, "must be an address and port a packet can be sent to")
		}
	}
	if p.PersistentKeepalive < 0 || p.PersistentKeepalive > 65535 {
		return configErr(field+".persistentKeepalive", strconv.Itoa(p.PersistentKeepalive), "must be 0-65535 seconds")
	}
	return nil
}

// installStaticPeer puts a checked static peer on dev.
func installStaticPeer(dev *wg.Device, p WGPeer) error {
	peer := wg.Peer{PublicKey: p.PublicKey, AllowedIPs: p.AllowedIPs, PersistentKeepalive: p.PersistentKeepalive}
	if p.Endpoint != "" {
		peer.Endpoint, _ = netip.ParseAddrPort(p.Endpoint) // checkStaticPeer parsed it
	}
	if err := dev.AddPeer(peer); err != nil {
		return fmt.Errorf("adding WireGuard peer %s: %w", p.PublicKey, err)
	}
	return nil
}

// RemoveWGPeer removes a static WireGuard peer, ends its session and frees
// its address.
func (s *Server) RemoveWGPeer(pub Key) error {
	s.wgMu.Lock()
	var ip netip.Addr
	_ = s.reg.update(func(cur *regSnapshot) (*regSnapshot, error) {
		a, ok := cur.staticByKey(pub)
		if !ok {
			return nil, nil
		}
		ip = a
		next := cur.withStatic()
		delete(next.static, a)
		return next, nil
	})
	if !ip.IsValid() {
		s.wgMu.Unlock()
		return fmt.Errorf("%w: no static WireGuard peer %s", ErrUnknownClient, pub)
	}
	dev := s.wgDevice()
	s.wgMu.Unlock()
	if dev != nil {
		if err := s.removePeer(dev, pub); err != nil {
			return fmt.Errorf("warren: removing WireGuard peer: %w", err)
		}
	}
	s.wgSessMu.Lock()
	c := s.wgSessionOf(ip)
	s.wgSessMu.Unlock()
	if c != nil {
		c.close(reasonPeerRemoved, false)
	}
	return nil
}

// ListWGPeers returns the static WireGuard peers, by address.
func (s *Server) ListWGPeers() []WGPeer {
	static := s.reg.load().static
	out := make([]WGPeer, 0, len(static))
	for _, p := range static {
		p.AllowedIPs = slices.Clone(p.AllowedIPs)
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b WGPeer) int { return a.AllowedIPs[0].Addr().Compare(b.AllowedIPs[0].Addr()) })
	return out
}

// wgEndpoint is the host:port a WireGuard client dials.
func (s *Server) wgEndpoint() string {
	host := s.endpoint()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	port := s.cfg.WGListenPort
	if dev := s.wgDevice(); dev != nil {
		port = int(dev.Port())
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// wireGuardConf renders a client's .conf. With a zero private key (exports)
// the PrivateKey line is left for the key's holder to fill in.
func (s *Server) wireGuardConf(e ClientEntry, priv Key) (string, error) {
	if !s.cfg.runsWG() {
		return "", fmt.Errorf("warren: the hub does not run WireGuard (it needs wgPrivateKey and transportMode all, both or wireguard): %w", ErrNotSupported)
	}
	key := priv
	if key.IsZero() {
		key = Key{1} // placeholder for rendering; its line is replaced below
	}
	conf, err := wgconfig.ClientConfig(wgconfig.ClientParams{
		PrivateKey:          wgconfig.Key(key),
		Address:             []netip.Prefix{netip.PrefixFrom(e.AssignedIP, e.AssignedIP.BitLen())},
		DNS:                 s.cfg.DNS,
		MTU:                 s.cfg.MTU,
		ServerPublicKey:     wgconfig.Key(s.cfg.WGPrivateKey.PublicKey()),
		Endpoint:            s.wgEndpoint(),
		AllowedIPs:          []netip.Prefix{s.cfg.Subnet},
		PersistentKeepalive: wgKeepalive,
	})
	if err != nil {
		return "", fmt.Errorf("warren: rendering WireGuard config: %w", err)
	}
	text, err := conf.MarshalText()
	if err != nil {
		return "", fmt.Errorf("warren: rendering WireGuard config: %w", err)
	}
	if priv.IsZero() {
		text = []byte(strings.Replace(string(text), "PrivateKey = "+key.String()+"\n", "# PrivateKey = (not kept by the hub: the one from the client's bundle)\n", 1))
	}
	return string(text), nil
}
