package session

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/warrenvpn/warren/codec"
	"github.com/warrenvpn/warren/handshake"
	"github.com/warrenvpn/warren/telemetry"
	"github.com/warrenvpn/warren/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type keypair struct{ priv, pub [32]byte }

func newKeypair(t testing.TB) keypair {
	t.Helper()
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var kp keypair
	copy(kp.priv[:], k.Bytes())
	copy(kp.pub[:], k.PublicKey().Bytes())
	return kp
}

// recorder is a Handler that keeps copies of what it gets.
type recorder struct {
	mu      sync.Mutex
	pkts    [][]byte
	arrived chan struct{}
	closed  chan Reason
}

func newRecorder() *recorder {
	return &recorder{arrived: make(chan struct{}, 1), closed: make(chan Reason, 1)}
}

func (r *recorder) Packets(bufs [][]byte, offset int) {
	r.mu.Lock()
	for _, b := range bufs {
		r.pkts = append(r.pkts, bytes.Clone(b[offset:]))
	}
	r.mu.Unlock()
	select {
	case r.arrived <- struct{}{}:
	default:
	}
}

func (r *recorder) Closed(reason Reason) { r.closed <- reason }

// waitPackets waits until n packets have arrived and returns them.
func (r *recorder) waitPackets(t *testing.T, n int) [][]byte {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		got := len(r.pkts)
		r.mu.Unlock()
		if got >= n {
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.pkts
		}
		select {
		case <-r.arrived:
		case <-deadline:
			t.Fatalf("got %d of %d packets", got, n)
		}
	}
}

func (r *recorder) waitClosed(t *testing.T) Reason {
	t.Helper()
	select {
	case reason := <-r.closed:
		return reason
	case <-time.After(10 * time.Second):
		t.Fatal("session did not end")
		return Reason{}
	}
}

var clientAddr = netip.MustParsePrefix("10.8.0.2/24")

// world is a hub and a client key pair, a guard, and the hub's verdict.
type world struct {
	hub, client keypair
	guard       handshake.TimestampGuard
	verdict     Verdict
	known       bool
	// clientTel and hubTel tune each side's estimator.
	clientTel, hubTel telemetry.Config
}

func newWorld(t testing.TB) *world {
	return &world{
		hub:    newKeypair(t),
		client: newKeypair(t),
		known:  true,
		verdict: Verdict{Hello: handshake.ServerHello{
			AssignedPrefix: clientAddr, Gateway: netip.MustParseAddr("10.8.0.1"), MTU: 1420, KeepaliveSeconds: 25,
		}},
	}
}

func (w *world) acceptConfig() AcceptConfig {
	return AcceptConfig{
		PrivateKey: w.hub.priv, PublicKey: w.hub.pub, Transport: "pipe", Guard: &w.guard, Telemetry: w.hubTel,
		Authorize: func(key [32]byte, _ handshake.ClientHello, _ netip.AddrPort) (Verdict, error) {
			if !w.known || key != w.client.pub {
				return Verdict{}, errors.New("unknown key")
			}
			return w.verdict, nil
		},
	}
}

func (w *world) dialConfig() DialConfig {
	return DialConfig{PrivateKey: w.client.priv, PublicKey: w.client.pub, ServerPublicKey: w.hub.pub, Version: "test", Transport: "pipe", Telemetry: w.clientTel}
}

// result of one side of a handshake.
type result struct {
	s   *Session
	err error
}

// handshakeOver runs both sides of a handshake over the two ends. The hub
// side closes its conn on failure, as a hub does, and starts its session
// with hh on success, which sends its answer.
func (w *world) handshakeOver(t testing.TB, cc, hc transport.Conn, hh Handler) (client, hub result, hello handshake.ServerHello) {
	t.Helper()
	done := make(chan result)
	go func() {
		s, _, err := Accept(hc, w.acceptConfig())
		if err != nil {
			hc.Close()
		} else {
			s.Start(hh)
		}
		done <- result{s, err}
	}()
	s, hello, err := Dial(cc, w.dialConfig())
	if err != nil {
		cc.Close()
	}
	hub = <-done
	return result{s, err}, hub, hello
}

// connected returns started client and hub sessions over a pipe.
func (w *world) connected(t *testing.T, cc, hc transport.Conn) (c, h *Session, cr, hr *recorder) {
	t.Helper()
	cr, hr = newRecorder(), newRecorder()
	client, hub, _ := w.handshakeOver(t, cc, hc, hr)
	if client.err != nil {
		t.Fatalf("handshake: client %v, hub %v", client.err, hub.err)
	}
	client.s.Start(cr)
	t.Cleanup(func() {
		client.s.Close(Reason{codec.DisconnectClosed, "test over"})
		hub.s.Close(Reason{codec.DisconnectShuttingDown, "test over"})
		<-client.s.Done()
		<-hub.s.Done()
	})
	return client.s, hub.s, cr, hr
}

// packetBuf returns a packet of n bytes filled with tag, at Headroom in a
// buffer with Tailroom behind it.
func packetBuf(n int, tag byte) []byte {
	b := make([]byte, Headroom+n, Headroom+n+Tailroom)
	for i := Headroom; i < len(b); i++ {
		b[i] = tag
	}
	return b
}

func TestHandshakeSucceedsAndPeersKnowEachOther(t *testing.T) {
	w := newWorld(t)
	cc, hc := newPipe(0)
	c, h, _, _ := w.connected(t, cc, hc)
	if p := h.Peer(); p.PublicKey != w.client.pub || p.Addr != clientAddr.Addr() || p.Transport != "pipe" || p.Remote != hc.RemoteAddr() {
		t.Errorf("hub sees peer %+v", p)
	}
	if p := c.Peer(); p.PublicKey != w.hub.pub || p.Addr != netip.MustParseAddr("10.8.0.1") {
		t.Errorf("client sees peer %+v", p)
	}
	if c.MTU() != 1420 || h.MTU() != 1420 {
		t.Errorf("MTU client %d hub %d", c.MTU(), h.MTU())
	}
	if c.Err() != nil || h.Err() != nil {
		t.Errorf("running sessions report %v, %v", c.Err(), h.Err())
	}
}

func TestUnknownKeyGetsNoAnswer(t *testing.T) {
	w := newWorld(t)
	w.known = false
	cc, hc := newPipe(0)
	var hubWrote int
	hc.onWrite = func([]byte) { hubWrote++ }
	client, hub, _ := w.handshakeOver(t, cc, hc, nil)
	if hub.err == nil || client.s != nil {
		t.Fatalf("hub accepted an unknown key: %v", hub.err)
	}
	if !errors.Is(client.err, ErrNoAnswer) {
		t.Fatalf("client: %v, want ErrNoAnswer", client.err)
	}
	if hubWrote != 0 {
		t.Fatalf("hub wrote %d messages to an unknown key", hubWrote)
	}
}

func TestRefusedClientGetsSealedDisconnectWithCode(t *testing.T) {
	w := newWorld(t)
	w.verdict.Refuse = Reason{codec.DisconnectDisabled, "client disabled"}
	cc, hc := newPipe(0)
	client, hub, _ := w.handshakeOver(t, cc, hc, nil)
	var he *CloseError
	if !errors.As(hub.err, &he) || he.Reason.Code != codec.DisconnectDisabled {
		t.Fatalf("hub: %v", hub.err)
	}
	var ce *CloseError
	if !errors.As(client.err, &ce) || ce.Reason != w.verdict.Refuse || !ce.Remote {
		t.Fatalf("client: %v, want a CloseError with %+v", client.err, w.verdict.Refuse)
	}
}

func TestReplayedMessage1IsRefusedByTheGuard(t *testing.T) {
	w := newWorld(t)
	cc, hc := newPipe(0)
	var msg1 []byte
	cc.onWrite = func(b []byte) {
		if msg1 == nil {
			msg1 = bytes.Clone(b)
		}
	}
	if client, hub, _ := w.handshakeOver(t, cc, hc, newRecorder()); client.err != nil || hub.err != nil {
		t.Fatalf("first handshake: %v, %v", client.err, hub.err)
	} else {
		client.s.Start(newRecorder())
		client.s.Close(Reason{codec.DisconnectClosed, "done"})
		<-client.s.Done()
		<-hub.s.Done()
	}
	// An attacker re-sends the recorded message 1 on a new connection.
	ac, hc2 := newPipe(0)
	var hubWrote int
	hc2.onWrite = func([]byte) { hubWrote++ }
	if err := ac.WriteMessage(msg1); err != nil {
		t.Fatal(err)
	}
	_, _, err := Accept(hc2, w.acceptConfig())
	if !errors.Is(err, handshake.ErrReplay) {
		t.Fatalf("replayed message 1: %v, want ErrReplay", err)
	}
	if hubWrote != 0 {
		t.Fatal("the hub answered a replayed message 1")
	}
	hc2.Close()
	ac.Close()
}

func TestPacketsBothWaysInBatches(t *testing.T) {
	w := newWorld(t)
	cc, hc := newPipe(0)
	c, h, cr, hr := w.connected(t, cc, hc)
	const n = 3 * BatchSize
	up := make([][]byte, n)
	for i := range up {
		up[i] = packetBuf(100+i, byte(i))
	}
	for i := 0; i < n; i += 50 {
		if k, err := c.Write(up[i:min(i+50, n)], Headroom); err != nil || k != min(50, n-i) {
			t.Fatalf("Write: %d, %v", k, err)
		}
	}
	got := hr.waitPackets(t, n)
	for i, p := range got {
		if !bytes.Equal(p, bytes.Repeat([]byte{byte(i)}, 100+i)) {
			t.Fatalf("hub packet %d: %d bytes, %x...", i, len(p), p[:4])
		}
	}
	for i := range n {
		if !h.Send(bytes.Repeat([]byte{byte(i)}, 60)) {
			t.Fatalf("Send %d refused", i)
		}
	}
	if got := cr.waitPackets(t, n); len(got) != n || got[n-1][0] != byte(n-1) {
		t.Fatalf("client got %d packets", len(got))
	}
	if cn, hn := c.Counters(), h.Counters(); cn.PacketsOut != n || hn.PacketsIn != n || hn.PacketsOut != n || cn.PacketsIn != n {
		t.Fatalf("counters client %+v hub %+v", cn, hn)
	}
	if h.Send(make([]byte, 1421)) || h.Counters().Oversized != 1 {
		t.Fatal("a packet longer than the MTU was queued")
	}
	if _, err := c.Write(up[:1], Headroom-1); err == nil {
		t.Fatal("Write accepted an offset below Headroom")
	}
}

func TestKeepaliveIsAcknowledged(t *testing.T) {
	w := newWorld(t)
	w.clientTel = telemetry.Config{HealthyInterval: 200 * time.Millisecond, DegradedInterval: 100 * time.Millisecond, CriticalInterval: 50 * time.Millisecond, DeadAfter: 10 * time.Second}
	cc, hc := newPipe(0)
	c, _, _, _ := w.connected(t, cc, hc)
	deadline := time.Now().Add(10 * time.Second)
	for c.RTT() == 0 || c.Quality().RTT.Samples < 3 || c.Quality().Health != telemetry.HealthHealthy {
		if time.Now().After(deadline) {
			t.Fatal("no keepalive acknowledged")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCloseReasonReachesThePeer(t *testing.T) {
	w := newWorld(t)
	cc, hc := newPipe(0)
	c, h, cr, hr := w.connected(t, cc, hc)
	c.Close(Reason{codec.DisconnectClosed, "client disconnected"})
	r := hr.waitClosed(t)
	if r.Code != codec.DisconnectClosed || r.Text != "peer disconnected: client disconnected" {
		t.Fatalf("hub saw %+v", r)
	}
	<-h.Done()
	var ce *CloseError
	if !errors.As(h.Err(), &ce) || !ce.Remote || ce.Reason != r {
		t.Fatalf("hub Err %v", h.Err())
	}
	if r := cr.waitClosed(t); r.Code != codec.DisconnectClosed {
		t.Fatalf("client saw %+v", r)
	}
	if !errors.As(c.Err(), &ce) || ce.Remote {
		t.Fatalf("client Err %v", c.Err())
	}
	if c.Send([]byte{0x45}) {
		t.Fatal("Send after Close queued a packet")
	}
}

func TestMalformedFramesEndTheSessionWithProtocolError(t *testing.T) {
	for name, msg := range map[string]func(seal func([]byte) []byte) []byte{
		"unknown type": func(func([]byte) []byte) []byte { return []byte{0x99, 0, 0, 0, 1, 0} },
		"truncated":    func(func([]byte) []byte) []byte { return []byte{byte(codec.IPPacket), 0, 0, 1, 0, 1, 2} },
		"not sealed": func(func([]byte) []byte) []byte {
			b, _ := codec.AppendFrame(nil, codec.IPPacket, make([]byte, 40))
			return b
		},
		"handshake after handshake": func(seal func([]byte) []byte) []byte {
			b, _ := codec.AppendHeader(nil, codec.HandshakeInit, 10+handshake.Overhead)
			return append(b, seal(make([]byte, 10))...)
		},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			cc, hc := newPipe(0)
			c, _, _, hr := w.connected(t, cc, hc)
			// Seal with the client's stream cipher, under its write lock, so
			// the frame is the next one the hub opens.
			c.wmu.Lock()
			m := msg(func(p []byte) []byte {
				out, err := c.hs.Seal(nil, p)
				if err != nil {
					t.Error(err)
				}
				return out
			})
			err := cc.WriteMessage(m)
			c.wmu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			if r := hr.waitClosed(t); r.Code != codec.DisconnectProtocolError {
				t.Fatalf("hub ended with %+v, want protocol error", r)
			}
		})
	}
}

func TestDatagramSessionCapsMTUAndCarriesPackets(t *testing.T) {
	w := newWorld(t)
	cc, hc := newDatagramPipe(600)
	c, h, cr, hr := w.connected(t, cc, hc)
	if c.MTU() != DatagramMTU || h.MTU() != DatagramMTU {
		t.Fatalf("MTU over datagrams: client %d hub %d", c.MTU(), h.MTU())
	}
	small, big := packetBuf(500, 1), packetBuf(1000, 2)
	if _, err := c.Write([][]byte{small, big}, Headroom); err != nil {
		t.Fatal(err)
	}
	got := hr.waitPackets(t, 2)
	var sizes []int
	for _, p := range got {
		sizes = append(sizes, len(p))
	}
	if len(got) != 2 || sizes[0]+sizes[1] != 1500 {
		t.Fatalf("hub got sizes %v", sizes)
	}
	if m := c.MTUInfo(); m.DatagramsSent != 1 || m.OnStream != 1 || m.MaxDatagram != 600 {
		t.Fatalf("client MTUInfo %+v: want one datagram and one packet on the stream", m)
	}
	// Hub to client through the queue, both ways of the path.
	h.Send(bytes.Repeat([]byte{3}, 500))
	h.Send(bytes.Repeat([]byte{4}, 1000))
	cr.waitPackets(t, 2)
	if n := h.Counters(); n.OnStream != 1 || n.PacketsOut != 2 {
		t.Fatalf("hub counters %+v", n)
	}
}

func TestDatagramsReorderedAcceptedReplayedDropped(t *testing.T) {
	w := newWorld(t)
	cc, hc := newDatagramPipe(1400)
	c, h, _, hr := w.connected(t, cc, hc)
	cc.mu.Lock()
	cc.hold = true
	cc.mu.Unlock()
	for i := range 6 {
		if _, err := c.Write([][]byte{packetBuf(100, byte(i))}, Headroom); err != nil {
			t.Fatal(err)
		}
	}
	cc.mu.Lock()
	captured := cc.sent
	cc.hold = false
	cc.mu.Unlock()
	if len(captured) != 6 {
		t.Fatalf("captured %d datagrams", len(captured))
	}
	for _, i := range []int{5, 3, 4, 0, 2, 1} {
		cc.inject(bytes.Clone(captured[i]))
	}
	hr.waitPackets(t, 6)
	for range 3 {
		cc.inject(bytes.Clone(captured[3]))
	}
	deadline := time.Now().Add(10 * time.Second)
	for h.Counters().Replayed != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("replayed %d, want 3", h.Counters().Replayed)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(hr.waitPackets(t, 6)); n != 6 {
		t.Fatalf("hub got %d packets, want 6", n)
	}
	// A datagram that does not authenticate is dropped too.
	forged := binary.BigEndian.AppendUint64([]byte{byte(codec.IPPacket)}, 99)
	cc.inject(append(forged, make([]byte, 40)...))
	if n := h.Counters().PacketsIn; n != 6 {
		t.Fatalf("packets in %d", n)
	}
}

// counter is a Handler that counts packets and signals each batch.
type counter struct {
	batches chan int
}

func (c *counter) Packets(bufs [][]byte, _ int) { c.batches <- len(bufs) }
func (c *counter) Closed(Reason)                {}

func TestSteadyStateWriteAndReadAllocateNothing(t *testing.T) {
	w := newWorld(t)
	cc, hc := newPipe(0)
	sink := &counter{batches: make(chan int, 1024)}
	client, hub, _ := w.handshakeOver(t, cc, hc, sink)
	if client.err != nil || hub.err != nil {
		t.Fatal(client.err, hub.err)
	}
	client.s.Start(&counter{batches: make(chan int, 1024)})
	defer func() {
		client.s.Close(Reason{codec.DisconnectClosed, "over"})
		<-client.s.Done()
		<-hub.s.Done()
	}()
	batch := make([][]byte, 32)
	for i := range batch {
		batch[i] = packetBuf(1400, byte(i))
	}
	round := func() {
		// The packets are sealed in place or into the session's message
		// buffer; a fresh copy of the plaintext each round is not needed
		// on the stream, which leaves the buffers as they were.
		if _, err := client.s.Write(batch, Headroom); err != nil {
			t.Fatal(err)
		}
		// A lost batch hangs until the test's timeout: a timer here
		// would be an allocation of the test's own.
		for got := 0; got < len(batch); got += <-sink.batches {
		}
	}
	for range 10 {
		round() // warm up: message buffers grow, pool fills
	}
	if a := testing.AllocsPerRun(200, round); a != 0 {
		t.Fatalf("%v allocations per batch of %d packets, want 0", a, len(batch))
	}
}

func BenchmarkWriteRead(b *testing.B) {
	w := newWorld(b)
	cc, hc := newPipe(0)
	sink := &counter{batches: make(chan int, 1024)}
	client, hub, _ := w.handshakeOver(b, cc, hc, sink)
	if client.err != nil || hub.err != nil {
		b.Fatal(client.err, hub.err)
	}
	client.s.Start(&counter{batches: make(chan int, 1024)})
	defer func() {
		client.s.Close(Reason{codec.DisconnectClosed, "over"})
		<-client.s.Done()
		<-hub.s.Done()
	}()
	batch := make([][]byte, 32)
	for i := range batch {
		batch[i] = packetBuf(1400, byte(i))
	}
	b.SetBytes(int64(1400 * len(batch)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := client.s.Write(batch, Headroom); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < len(batch); got += <-sink.batches {
		}
	}
}

// headroomRecorder records the offset of every batch and checks that the
// headroom in front of each packet is the handler's to write: it fills it.
type headroomRecorder struct {
	*recorder
	mu      sync.Mutex
	offsets []int
}

func (r *headroomRecorder) Packets(bufs [][]byte, offset int) {
	for _, b := range bufs {
		for i := range offset {
			b[i] = 0xee // a header written in place must not corrupt any packet
		}
	}
	r.mu.Lock()
	r.offsets = append(r.offsets, offset)
	r.mu.Unlock()
	r.recorder.Packets(bufs, offset)
}

// headroomPipe is a pipe end that is a transport.HeadroomReader, as the
// WebSocket transport is.
type headroomPipe struct {
	*pipeEnd
	buf []byte
}

func (p *headroomPipe) ReadMessageHeadroom(n int) ([]byte, error) {
	m, err := p.ReadMessage()
	if err != nil {
		return nil, err
	}
	p.buf = append(append(p.buf[:0], make([]byte, n)...), m...)
	return p.buf, nil
}

func TestStreamPacketsReachHandlerWithReadHeadroom(t *testing.T) {
	w := newWorld(t)
	cc, hc := newPipe(0)
	hr := &headroomRecorder{recorder: newRecorder()}
	client, hub, _ := w.handshakeOver(t, cc, &headroomPipe{pipeEnd: hc}, hr)
	if client.err != nil || hub.err != nil {
		t.Fatal(client.err, hub.err)
	}
	client.s.Start(newRecorder())
	defer func() {
		client.s.Close(Reason{codec.DisconnectClosed, "over"})
		<-client.s.Done()
		<-hub.s.Done()
	}()
	const n = 10
	batch := make([][]byte, n)
	for i := range batch {
		batch[i] = packetBuf(100+i, byte(i))
	}
	if _, err := client.s.Write(batch, Headroom); err != nil {
		t.Fatal(err)
	}
	got := hr.waitPackets(t, n)
	for i, p := range got {
		if !bytes.Equal(p, bytes.Repeat([]byte{byte(i)}, 100+i)) {
			t.Fatalf("packet %d: %d bytes, %x...", i, len(p), p[:4])
		}
	}
	hr.mu.Lock()
	defer hr.mu.Unlock()
	for _, off := range hr.offsets {
		if off < ReadHeadroom {
			t.Fatalf("batch with %d bytes of headroom, want at least %d", off, ReadHeadroom)
		}
	}
}

func TestIdleSessionQueueGrowsOnlyWithTraffic(t *testing.T) {
	w := newWorld(t)
	cc, hc := newPipe(0)
	_, h, cr, _ := w.connected(t, cc, hc)
	queueLen := func() int {
		h.qmu.Lock()
		defer h.qmu.Unlock()
		return len(h.q)
	}
	if n := queueLen(); n != 0 {
		t.Fatalf("an idle session holds a queue of %d", n)
	}
	for i := range 3 {
		if !h.Send(bytes.Repeat([]byte{byte(i)}, 60)) {
			t.Fatalf("Send %d refused", i)
		}
	}
	cr.waitPackets(t, 3)
	if n := queueLen(); n == 0 || n > minQueue {
		t.Fatalf("queue of %d after 3 packets, want at most %d", n, minQueue)
	}
}

func TestSendBatchQueuesAtOffsetAndCounts(t *testing.T) {
	w := newWorld(t)
	cc, hc := newPipe(0)
	_, h, cr, _ := w.connected(t, cc, hc)
	const offset = 16
	batch := make([][]byte, 5)
	for i := range batch {
		batch[i] = append(make([]byte, offset), bytes.Repeat([]byte{byte(i)}, 60)...)
	}
	batch[2] = make([]byte, offset+h.MTU()+1) // too long
	if n := h.SendBatch(batch, offset); n != 4 {
		t.Fatalf("SendBatch queued %d, want 4", n)
	}
	got := cr.waitPackets(t, 4)
	for i, want := range []byte{0, 1, 3, 4} {
		if !bytes.Equal(got[i], bytes.Repeat([]byte{want}, 60)) {
			t.Fatalf("packet %d = %x..., want %d", i, got[i][:4], want)
		}
	}
	if n := h.Counters(); n.Oversized != 1 || n.PacketsOut != 4 {
		t.Fatalf("counters %+v, want 1 oversized and 4 out", n)
	}
}
