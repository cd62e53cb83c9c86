package wg

import (
	"net/netip"
	"time"
)

// peerWatch is what watchPeers remembers about one peer between polls.
type peerWatch struct {
	up        bool
	handshake time.Time // LastHandshake as last polled
	rx        uint64    // RxBytes as last polled
	heard     time.Time // when handshake or rx last changed (local clock)
	endpoint  netip.AddrPort
}

// watchPeers polls the peers every pollInterval and reports PeerEvents
// until Close.
func (d *Device) watchPeers() {
	defer d.routines.Done()
	t := time.NewTicker(d.pollInterval)
	defer t.Stop()
	watched := make(map[[32]byte]*peerWatch)
	for {
		select {
		case <-d.stop:
			return
		case now := <-t.C:
			d.pollPeers(watched, now)
		}
	}
}

// pollPeers compares the peers' state with the last poll's and emits the
// events that follow from the difference.
func (d *Device) pollPeers(watched map[[32]byte]*peerWatch, now time.Time) {
	if d.closed.Load() {
		return
	}
	s, err := d.wg.IpcGet()
	if err != nil {
		d.log.Warn("wireguard: poll peers", "err", err)
		return
	}
	peers := parsePeers(s)
	seen := make(map[[32]byte]bool, len(peers))
	for _, p := range peers {
		seen[p.PublicKey] = true
		w := watched[p.PublicKey]
		if w == nil {
			w = &peerWatch{}
			watched[p.PublicKey] = w
		}
		roamed := w.up && p.Endpoint.IsValid() && p.Endpoint != w.endpoint
		if p.Endpoint.IsValid() {
			w.endpoint = p.Endpoint
		}
		newHandshake := !p.LastHandshake.IsZero() && !p.LastHandshake.Equal(w.handshake)
		heard := newHandshake || p.RxBytes > w.rx
		if heard {
			w.heard = now
		}
		w.handshake, w.rx = p.LastHandshake, p.RxBytes
		switch {
		case !w.up && heard && !p.LastHandshake.IsZero():
			w.up = true
			d.emit(PeerEvent{PublicKey: p.PublicKey, Up: true, Endpoint: w.endpoint})
		case w.up && now.Sub(w.heard) > d.deadPeerTimeout:
			w.up = false
			d.emit(PeerEvent{PublicKey: p.PublicKey, Up: false, Endpoint: w.endpoint})
		case roamed:
			d.emit(PeerEvent{PublicKey: p.PublicKey, Up: true, Roamed: true, Endpoint: w.endpoint})
		}
	}
	for key, w := range watched {
		if seen[key] {
			continue
		}
		delete(watched, key)
		if w.up {
			d.emit(PeerEvent{PublicKey: key, Up: false, Endpoint: w.endpoint})
		}
	}
}

func (d *Device) emit(ev PeerEvent) {
	d.log.Info("wireguard peer", "publicKey", keyString(ev.PublicKey), "up", ev.Up, "roamed", ev.Roamed, "endpoint", ev.Endpoint)
	if d.peerEvent != nil {
		d.peerEvent(ev)
	}
}
