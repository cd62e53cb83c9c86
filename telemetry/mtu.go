package telemetry

// Header sizes of the standard protocols under Warren's framing, for building
// [Layer] lists. Warren's own sizes (frame header, AEAD tag, nonce, TLS record
// and QUIC packet overhead as the transport runs them) come from its codec and
// handshake packages, not from here.
const (
	IPv4HeaderLen = 20 // without options
	IPv6HeaderLen = 40
	UDPHeaderLen  = 8
	TCPHeaderLen  = 20 // without options
)

// Layer is one layer of a transport's per-packet overhead.
type Layer struct {
	// Name says what the bytes are, as "ipv4", "udp", "quic short header",
	// "warren frame header".
	Name string `json:"name"`
	// Bytes is the layer's size per tunnelled packet.
	Bytes int `json:"bytes"`
}

// Framing describes how one transport carries a tunnelled IP packet.
type Framing struct {
	// Transport names the transport, as "websocket".
	Transport string
	// Layers lists the bytes added around each tunnelled packet, outermost
	// first.
	Layers []Layer
	// Stream reports that the transport is a byte stream (TCP): its frames
	// may span segments, so the path MTU does not bound the tunnelled packet;
	// the overhead still costs bandwidth.
	Stream bool
}

// TransportMTU is the overhead and effective MTU of one transport.
type TransportMTU struct {
	Transport string  `json:"transport"`
	Layers    []Layer `json:"layers"`
	// Overhead is the sum of the layers' bytes.
	Overhead int `json:"overhead"`
	// EffectiveMTU is the largest tunnelled IP packet that crosses the path
	// in one outer packet: min(tunnel MTU, path MTU - Overhead), or the tunnel
	// MTU for a stream transport; zero when the overhead leaves no room.
	EffectiveMTU int `json:"effectiveMtu"`
}

// MTUInfo is a tunnel's MTU and each transport's overhead, for Client.MTUInfo.
type MTUInfo struct {
	// TunnelMTU is the MTU of the tunnel interface.
	TunnelMTU int `json:"tunnelMtu"`
	// PathMTU is the MTU of the path the outer packets take.
	PathMTU    int            `json:"pathMtu"`
	Transports []TransportMTU `json:"transports"`
	// OversizedPackets counts packets dropped for being larger than the
	// tunnel MTU; the caller fills it in from its [Counters].
	OversizedPackets uint64 `json:"oversizedPackets"`
}

// ComputeMTU returns the overhead and effective MTU of each framing for a
// tunnel of tunnelMTU over a path of pathMTU. It is a pure function of its
// arguments; the Layers slices are copied.
func ComputeMTU(tunnelMTU, pathMTU int, framings ...Framing) MTUInfo {
	info := MTUInfo{TunnelMTU: tunnelMTU, PathMTU: pathMTU, Transports: make([]TransportMTU, 0, len(framings))}
	for _, f := range framings {
		t := TransportMTU{Transport: f.Transport, Layers: append([]Layer(nil), f.Layers...)}
		for _, l := range f.Layers {
			t.Overhead += l.Bytes
		}
		if f.Stream {
			t.EffectiveMTU = tunnelMTU
		} else {
			t.EffectiveMTU = max(min(tunnelMTU, pathMTU-t.Overhead), 0)
		}
		info.Transports = append(info.Transports, t)
	}
	return info
}
