package warren

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

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
// A WireGuard session begins with the peer's first packet or completed
// handshake (ClientConnected) and ends when the peer has been silent past the
// dead-peer timeout, or is disabled, rotated or removed (ClientDisconnected).

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
		Receive:         s.wgReceive,
		PeerEvent:       s.wgPeerEvent,
		DeadPeerTimeout: deadPeerTimeout,
		Logger:          s.log.With("component", "wireguard"),
	})
	if err != nil {
		return err
	}
	s.wgDev = dev
	for _, p := range s.cfg.WGPeers {
		if err := s.addStaticPeer(p); err != nil {
			dev.Close()
			s.wgDev = nil
			return err
		}
	}
	ids := make([]string, 0)
	s.reg.mu.RLock()
	for id := range s.reg.byID {
		ids = append(ids, id)
	}
	s.reg.mu.RUnlock()
	for _, id := range ids {
		s.wgSync(id)
	}
	return nil
}

// WGAddr returns the WireGuard UDP address, or nil when WireGuard is not running.
func (s *Server) WGAddr() net.Addr {
	s.mu.Lock()
	dev := s.wgDev
	s.mu.Unlock()
	if dev == nil {
		return nil
	}
	return &net.UDPAddr{IP: net.IPv4zero, Port: int(dev.Port())}
}

// wgSync makes the device's peer for a registered client match the registry:
// present with the client's current key while it is enabled and not expired,
// absent otherwise.
func (s *Server) wgSync(id string) {
	s.wgMu.Lock()
	defer s.wgMu.Unlock()
	dev := s.wgDevice()
	if dev == nil {
		return
	}
	var want Key
	var ip netip.Addr
	s.reg.mu.RLock()
	if re, ok := s.reg.byID[id]; ok {
		e := re.entry
		if e.Enabled && (e.ExpiresAt.IsZero() || time.Now().Before(e.ExpiresAt)) {
			want, ip = e.WGPublicKey, e.AssignedIP
		}
	}
	s.reg.mu.RUnlock()
	have := s.wgKeys[id]
	if have == want {
		return
	}
	if !have.IsZero() {
		if err := dev.RemovePeer(have); err != nil {
			s.log.Warn("removing WireGuard peer", "client", id, "err", err)
		}
		delete(s.wgKeys, id)
	}
	if !want.IsZero() {
		err := dev.AddPeer(wg.Peer{PublicKey: want, AllowedIPs: []netip.Prefix{netip.PrefixFrom(ip, ip.BitLen())}})
		if err != nil {
			s.log.Error("adding WireGuard peer", "client", id, "err", err)
			return
		}
		s.wgKeys[id] = want
	}
}

func (s *Server) wgDevice() *wg.Device {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wgDev
}

// wgReceive takes packets from WireGuard peers into the pipeline.
// wireguard-go hands one peer's packets per call; the batch is still split
// by source so each run goes to its own session.
func (s *Server) wgReceive(bufs [][]byte) {
	for len(bufs) > 0 {
		src := packetSource(bufs[0])
		n := 1
		for n < len(bufs) && packetSource(bufs[n]) == src {
			n++
		}
		run := bufs[:n]
		bufs = bufs[n:]
		ss := s.wgSession(src)
		if ss == nil {
			s.stats.noRoute.Add(uint64(len(run)))
			continue
		}
		c := ss.c.(*wgConduit)
		c.packetsIn.Add(uint64(len(run)))
		for _, p := range run {
			c.bytesIn.Add(uint64(len(p)))
		}
		s.route(ss, run)
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
// one for a registered client or static peer that has none yet.
func (s *Server) wgSession(ip netip.Addr) *session {
	if ss := (*s.wgSessions.Load())[ip]; ss != nil {
		return ss
	}
	s.wgMu.Lock()
	defer s.wgMu.Unlock()
	if ss := (*s.wgSessions.Load())[ip]; ss != nil {
		return ss
	}
	dev := s.wgDevice()
	if dev == nil {
		return nil
	}
	ss := &session{srv: s, ip: ip, transport: "wireguard", since: time.Now()}
	var wgKey Key
	s.reg.mu.RLock()
	re, ok := s.reg.byIP[ip]
	s.reg.mu.RUnlock()
	switch {
	case ok && s.wgKeys[re.entry.ClientID] == re.entry.WGPublicKey && !re.entry.WGPublicKey.IsZero():
		e := re.entry
		ss.id, ss.key, ss.expires = e.ClientID, e.PublicKey, e.ExpiresAt
		if e.Security != nil {
			ss.maxConns = e.Security.MaxConnections
		}
		ss.sec.Store(re.sec)
		wgKey = e.WGPublicKey
	default:
		p, ok := s.wgStatic[ip]
		if !ok {
			return nil
		}
		ss.id, ss.static = staticPeerID(p.PublicKey), true
		wgKey = p.PublicKey
	}
	for _, p := range dev.Peers() {
		if Key(p.PublicKey) == wgKey {
			ss.remote = p.Endpoint
		}
	}
	ss.c = &wgConduit{srv: s, ss: ss, dev: dev, pub: wgKey}
	s.mu.Lock()
	m := make(map[netip.Addr]*session, len(*s.wgSessions.Load())+1)
	for k, v := range *s.wgSessions.Load() {
		m[k] = v
	}
	m[ip] = ss
	s.wgSessions.Store(&m)
	s.mu.Unlock()
	if !s.register(ss) {
		ss.c.close(reasonShutdown, false, false)
		return nil
	}
	return ss
}

func staticPeerID(k [32]byte) string { return "wg-" + Key(k).String()[:8] }

// wgPeerEvent turns the device's peer events into sessions.
func (s *Server) wgPeerEvent(ev wg.PeerEvent) {
	key := Key(ev.PublicKey)
	var ip netip.Addr
	s.wgMu.Lock()
	for id, k := range s.wgKeys {
		if k == key {
			s.reg.mu.RLock()
			if re, ok := s.reg.byID[id]; ok {
				ip = re.entry.AssignedIP
			}
			s.reg.mu.RUnlock()
		}
	}
	for a, p := range s.wgStatic {
		if Key(p.PublicKey) == key {
			ip = a
		}
	}
	s.wgMu.Unlock()
	if !ip.IsValid() {
		return
	}
	if ev.Up {
		s.wgSession(ip)
		return
	}
	if ss := (*s.wgSessions.Load())[ip]; ss != nil {
		ss.c.close(reasonDeadPeer, false, true)
	}
}

// wgConduit is a WireGuard session's way to its peer: the device routes a
// packet by its destination, which is the peer's address.
type wgConduit struct {
	srv    *Server
	ss     *session
	dev    *wg.Device
	pub    Key
	closed atomic.Bool

	bytesIn, bytesOut, packetsIn, packetsOut atomic.Uint64
	oversized                                atomic.Uint64
}

func (c *wgConduit) send(pkt []byte) bool {
	if len(pkt) > c.srv.cfg.MTU {
		c.oversized.Add(1)
		return false
	}
	one := [1][]byte{pkt}
	if c.dev.Send(one[:]) != nil {
		return false
	}
	c.packetsOut.Add(1)
	c.bytesOut.Add(uint64(len(pkt)))
	return true
}

// close ends the session. WireGuard has no message to tell the peer why;
// a peer that is still allowed starts a new session with its next packet.
func (c *wgConduit) close(reason closeReason, notify, remote bool) {
	if c.closed.Swap(true) {
		return
	}
	c.srv.removeSession(c.ss, reason)
}

func (c *wgConduit) counts() linkCounts {
	return linkCounts{
		bytesIn:    c.bytesIn.Load(),
		bytesOut:   c.bytesOut.Load(),
		packetsIn:  c.packetsIn.Load(),
		packetsOut: c.packetsOut.Load(),
		oversized:  c.oversized.Load(),
	}
}

// lastSeen: the device reports dead peers itself (PeerEvent Down), counting
// the keepalives the pipeline never sees.
func (c *wgConduit) lastSeen() time.Time { return time.Now() }

// AddWGPeer adds a static WireGuard peer that is not a registered client.
// Its first AllowedIP must be a single address inside Subnet that no client
// holds: its tunnel address. It needs the WireGuard transport running.
func (s *Server) AddWGPeer(p WGPeer) error {
	if err := s.checkStaticPeer("wgPeer", p); err != nil {
		return err
	}
	s.wgMu.Lock()
	defer s.wgMu.Unlock()
	if s.wgDevice() == nil {
		return fmt.Errorf("warren: WireGuard is not running: %w", ErrNotSupported)
	}
	return s.addStaticPeer(p)
}

// addStaticPeer installs a validated static peer. Call with s.wgMu held (or
// during Start).
func (s *Server) addStaticPeer(p WGPeer) error {
	ip := p.AllowedIPs[0].Addr()
	if other, ok := s.wgStatic[ip]; ok && other.PublicKey != p.PublicKey {
		return configErr("wgPeer.allowedIps[0]", ip.String(), "already the address of static peer "+other.PublicKey.String())
	}
	peer := wg.Peer{PublicKey: p.PublicKey, AllowedIPs: p.AllowedIPs, PersistentKeepalive: p.PersistentKeepalive}
	if p.Endpoint != "" {
		ap, err := netip.ParseAddrPort(p.Endpoint)
		if err != nil {
			return configErr("wgPeer.endpoint", p.Endpoint, "must be ip:port")
		}
		peer.Endpoint = ap
	}
	if err := s.wgDev.AddPeer(peer); err != nil {
		return fmt.Errorf("warren: adding WireGuard peer: %w", err)
	}
	p.AllowedIPs = slices.Clone(p.AllowedIPs)
	s.wgStatic[ip] = p
	return nil
}

// checkStaticPeer validates a static peer against the config and registry.
func (s *Server) checkStaticPeer(field string, p WGPeer) error {
	if p.PublicKey.IsZero() {
		return configErr(field+".publicKey", "", "required")
	}
	if len(p.AllowedIPs) == 0 {
		return configErr(field+".allowedIps", "", "needs at least the peer's tunnel address")
	}
	first := p.AllowedIPs[0]
	if !first.IsValid() || first.Bits() != first.Addr().BitLen() {
		return configErr(field+".allowedIps[0]", first.String(), "must be a single address (/32 or /128): the peer's tunnel address")
	}
	if why := s.checkAddr(first.Addr()); why != "" {
		return configErr(field+".allowedIps[0]", first.String(), why)
	}
	s.reg.mu.RLock()
	re, taken := s.reg.byIP[first.Addr()]
	s.reg.mu.RUnlock()
	if taken {
		return configErr(field+".allowedIps[0]", first.String(), "assigned to client "+re.entry.ClientID)
	}
	if p.PersistentKeepalive < 0 || p.PersistentKeepalive > 65535 {
		return configErr(field+".persistentKeepalive", strconv.Itoa(p.PersistentKeepalive), "must be 0-65535 seconds")
	}
	return nil
}

// RemoveWGPeer removes a static WireGuard peer and ends its session.
func (s *Server) RemoveWGPeer(pub Key) error {
	s.wgMu.Lock()
	var ip netip.Addr
	for a, p := range s.wgStatic {
		if p.PublicKey == pub {
			ip = a
		}
	}
	if !ip.IsValid() {
		s.wgMu.Unlock()
		return fmt.Errorf("%w: no static WireGuard peer %s", ErrUnknownClient, pub)
	}
	delete(s.wgStatic, ip)
	dev := s.wgDevice()
	s.wgMu.Unlock()
	if dev != nil {
		if err := dev.RemovePeer(pub); err != nil {
			return fmt.Errorf("warren: removing WireGuard peer: %w", err)
		}
	}
	if ss := (*s.wgSessions.Load())[ip]; ss != nil {
		ss.c.close(reasonPeerRemoved, false, false)
	}
	return nil
}

// ListWGPeers returns the static WireGuard peers.
func (s *Server) ListWGPeers() []WGPeer {
	s.wgMu.Lock()
	defer s.wgMu.Unlock()
	out := make([]WGPeer, 0, len(s.wgStatic))
	for _, p := range s.wgStatic {
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
	if s.cfg.WGPrivateKey.IsZero() {
		return "", fmt.Errorf("warren: the hub has no wgPrivateKey, so WireGuard does not run: %w", ErrNotSupported)
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
