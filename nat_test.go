package warren

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/warrenvpn/warren/forward/netstack"
	"github.com/warrenvpn/warren/internal/packet"
)

// newNATHub starts a hub with the userspace NAT; loopback is allowed so the
// tests can reach their own servers on 127.0.0.1.
func newNATHub(t testing.TB, mutate func(*ServerConfig)) *Server {
	t.Helper()
	kp, err := GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	cfg := ServerConfig{
		ListenAddr:        "127.0.0.1:0",
		PrivateKey:        kp.PrivateKey,
		Subnet:            netip.MustParsePrefix("10.8.0.0/24"),
		ForwardingMode:    ForwardSocket,
		EnableNAT:         true,
		DestinationPolicy: &DestinationPolicy{Default: PolicyAllow, AllowList: []string{"127.0.0.1"}},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// netClient registers and connects a client in netstack mode.
func netClient(t testing.TB, s *Server, id string, sec *ClientSecurity) *Client {
	t.Helper()
	b, err := s.CreateClient(context.Background(), ClientSpec{ClientID: id, Security: sec})
	if err != nil {
		t.Fatal(err)
	}
	if b.Config.ForwardingMode != "" {
		t.Fatalf("bundle forwarding mode %q", b.Config.ForwardingMode)
	}
	c, err := NewClient(b.Config) // the default: netstack
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

func httpServer(t testing.TB, ln net.Listener, body string) {
	t.Helper()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s from %s", body, r.RemoteAddr)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

func httpGet(t testing.TB, dial func(ctx context.Context, network, addr string) (net.Conn, error), url string) string {
	t.Helper()
	tr := &http.Transport{DialContext: dial}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestClientFetchesPageThroughHubNAT(t *testing.T) {
	s := newNATHub(t, nil)
	c := netClient(t, s, "alice", nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpServer(t, ln, "hello")
	body := httpGet(t, c.Dial, "http://"+ln.Addr().String()+"/")
	if !bytes.HasPrefix([]byte(body), []byte("hello from 127.0.0.1:")) {
		t.Fatalf("body %q", body)
	}
}

func TestHubDialsClientAndClientsReachHubListener(t *testing.T) {
	s := newNATHub(t, nil)
	c := netClient(t, s, "alice", nil)
	cln, err := c.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	httpServer(t, cln, "client page")
	if body := httpGet(t, s.Dial, "http://10.8.0.2:8080/"); body != "client page from 10.8.0.1:"+body[len("client page from 10.8.0.1:"):] {
		t.Fatalf("hub got %q", body)
	}

	hln, err := s.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	httpServer(t, hln, "hub page")
	body := httpGet(t, c.Dial, "http://10.8.0.1/")
	if !bytes.HasPrefix([]byte(body), []byte("hub page from 10.8.0.2:")) {
		t.Fatalf("client got %q", body)
	}
}

func TestHubListenPacketAnswersFromItsPort(t *testing.T) {
	s := newNATHub(t, nil)
	c := netClient(t, s, "alice", nil)
	pc, err := s.ListenPacket("udp", ":53")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	conn, err := c.Dial(context.Background(), "udp", "10.8.0.1:53")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for i := range 5 {
		msg := fmt.Sprint("query ", i)
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if string(buf[:n]) != "echo:"+msg {
			t.Fatalf("got %q", buf[:n])
		}
	}
	if got := conn.RemoteAddr().String(); got != "10.8.0.1:53" {
		t.Fatalf("answer from %s", got)
	}
}

func TestUDPRequestResponseThroughNAT(t *testing.T) {
	s := newNATHub(t, nil)
	c := netClient(t, s, "alice", nil)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(bytes.ToUpper(buf[:n]), from)
		}
	}()
	conn, err := c.Dial(context.Background(), "udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	conn.Write([]byte("shout"))
	buf := make([]byte, 100)
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "SHOUT" {
		t.Fatalf("got %q, %v", buf[:n], err)
	}
}

func TestPingHubAddressWithNAT(t *testing.T) {
	s := newNATHub(t, nil)
	h := &testHub{Server: s}
	a := h.newClient(t, "alice", nil) // testing engine: we craft the ping by hand
	a.engine.Inject(packet.BuildICMPEcho(a.ip, s.HubIP(), 9, 3, []byte("are you there")))
	got, err := next(t, a.engine, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if typ, id, seq, p, ok := packet.ParseICMPEcho(got); !ok || typ != 0 || id != 9 || seq != 3 || string(p) != "are you there" {
		t.Fatalf("reply %v %d %d %q", typ, id, seq, p)
	}
}

// tcpEcho serves on 127.0.0.1 and echoes; it returns the listener.
func tcpEcho(t testing.TB) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln
}

func TestTCPBulkTransferThroughHubIsByteExact(t *testing.T) {
	size := 64 << 20
	if testing.Short() {
		size = 4 << 20
	}
	s := newNATHub(t, nil)
	c := netClient(t, s, "alice", nil)
	ln := tcpEcho(t)
	conn, err := c.Dial(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	want := sha256.New()
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for sent := 0; sent < size; sent += len(buf) {
			rand.Read(buf)
			want.Write(buf)
			if _, err := conn.Write(buf); err != nil {
				errc <- err
				return
			}
		}
		errc <- conn.(interface{ CloseWrite() error }).CloseWrite()
	}()
	got := sha256.New()
	start := time.Now()
	n, err := io.Copy(got, conn)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n != int64(size) || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatalf("echoed %d bytes, want %d; checksums equal: %v", n, size, bytes.Equal(got.Sum(nil), want.Sum(nil)))
	}
	el := time.Since(start)
	t.Logf("%d MiB each way through client netstack, WebSocket, hub NAT in %v (%.0f Mb/s each way)", size>>20, el, float64(size*8)/el.Seconds()/1e6)
}

func TestThousandShortTCPConnectionsThroughHub(t *testing.T) {
	n := 1000
	if testing.Short() {
		n = 100
	}
	s := newNATHub(t, nil)
	c := netClient(t, s, "alice", nil)
	ln := tcpEcho(t)
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn, err := c.Dial(ctx, "tcp", ln.Addr().String())
		cancel()
		if err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
		msg := []byte(fmt.Sprint("conn ", i))
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		conn.Write(msg)
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, buf); err != nil || !bytes.Equal(buf, msg) {
			t.Fatalf("conn %d: %q %v", i, buf, err)
		}
		conn.Close()
	}
	eng := s.engine.(*netstack.Engine)
	waitFor(t, 10*time.Second, "flows close", func() bool { return eng.Stats().ActiveTCP == 0 })
	if st := eng.Stats(); st.TCPForwarded != uint64(n) {
		t.Fatalf("TCPForwarded = %d, want %d", st.TCPForwarded, n)
	}
}

func TestPolicyForceTargetReachesForcedTarget(t *testing.T) {
	s := newNATHub(t, func(c *ServerConfig) {
		c.DestinationPolicy = &DestinationPolicy{Default: PolicyForceTarget, Target: "127.0.0.1"}
	})
	c := netClient(t, s, "alice", nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpServer(t, ln, "forced")
	port := ln.Addr().(*net.TCPAddr).Port
	for _, asked := range []string{"192.0.2.10", "198.51.100.77", "8.8.8.8"} {
		body := httpGet(t, c.Dial, fmt.Sprintf("http://%s:%d/", asked, port))
		if !bytes.HasPrefix([]byte(body), []byte("forced from")) {
			t.Fatalf("asked %s, got %q", asked, body)
		}
	}
}

func TestPolicyBlockAndACLOverride(t *testing.T) {
	ln := tcpEcho(t)
	port := ln.Addr().(*net.TCPAddr).Port
	s := newNATHub(t, func(c *ServerConfig) {
		c.DestinationPolicy = &DestinationPolicy{Default: PolicyForceTarget, Target: "127.0.0.1", BlockList: []string{"192.0.2.66"}, AllowList: []string{"127.0.0.1"}}
	})
	a := netClient(t, s, "alice", nil)
	b := netClient(t, s, "bob", &ClientSecurity{DestinationBlockList: []string{"127.0.0.1", "192.0.2.0/24"}})

	dial := func(c *Client, addr string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		conn, err := c.Dial(ctx, "tcp", addr)
		if err == nil {
			conn.Close()
		}
		return err
	}
	// The policy's block list wins over forceTarget.
	if err := dial(a, fmt.Sprintf("192.0.2.66:%d", port)); err == nil {
		t.Fatal("blocked destination reached")
	}
	if st := s.Statistics(); st.Drops.Policy == 0 {
		t.Fatalf("policy drops not counted: %+v", st.Drops)
	}
	// alice may go; bob's ACL refuses what the policy allows.
	if err := dial(a, fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
		t.Fatalf("alice: %v", err)
	}
	if err := dial(b, fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
		t.Fatal("bob reached a destination his ACL blocks")
	}
	if err := dial(b, fmt.Sprintf("192.0.2.10:%d", port)); err == nil {
		t.Fatal("bob reached a forced destination whose original his ACL blocks")
	}
	if st := s.Statistics(); st.Drops.ACL == 0 {
		t.Fatalf("ACL drops not counted: %+v", st.Drops)
	}
}

func TestLoopbackIsRefusedWithoutPolicy(t *testing.T) {
	ln := tcpEcho(t)
	s := newNATHub(t, func(c *ServerConfig) { c.DestinationPolicy = nil })
	c := netClient(t, s, "alice", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if conn, err := c.Dial(ctx, "tcp", ln.Addr().String()); err == nil {
		conn.Close()
		t.Fatal("a client reached the hub's loopback with no policy allowing it")
	}
}

// policyTable is the destination policy's meaning, case by case: the
// userspace engine's decision here (TestPolicyTable) and the TUN engine's
// nftables rules end to end (TestTUNPolicyTableInNamespaces).
var policyTable = []struct {
	policy *DestinationPolicy
	dst    string
	want   verdict
	target string
}{
	{nil, "198.51.100.1", verdictAllow, "198.51.100.1"},
	{nil, "127.0.0.1", verdictBlock, "127.0.0.1"},
	{nil, "::1", verdictBlock, "::1"},
	{&DestinationPolicy{Default: PolicyAllow, AllowList: []string{"127.0.0.0/8"}}, "127.0.0.5", verdictAllow, "127.0.0.5"},
	{&DestinationPolicy{Default: PolicyBlock}, "198.51.100.1", verdictBlock, "198.51.100.1"},
	{&DestinationPolicy{Default: PolicyBlock, AllowList: []string{"198.51.100.*"}}, "198.51.100.1", verdictAllow, "198.51.100.1"},
	{&DestinationPolicy{Default: PolicyBlock, AllowList: []string{"198.51.100.*"}}, "198.51.101.1", verdictBlock, "198.51.101.1"},
	{&DestinationPolicy{Default: PolicyAllow, BlockList: []string{"198.51.100.1-198.51.100.9"}}, "198.51.100.5", verdictBlock, "198.51.100.5"},
	{&DestinationPolicy{Default: PolicyAllow, BlockList: []string{"198.51.100.5"}, AllowList: []string{"198.51.100.0/24"}}, "198.51.100.5", verdictBlock, "198.51.100.5"},
	{&DestinationPolicy{Default: PolicyForceTarget, Target: "10.0.0.9"}, "198.51.100.1", verdictForce, "10.0.0.9"},
	{&DestinationPolicy{Default: PolicyForceTarget, Target: "10.0.0.9", AllowList: []string{"203.0.113.0/24"}}, "203.0.113.3", verdictAllow, "203.0.113.3"},
	{&DestinationPolicy{Default: PolicyForceTarget, Target: "10.0.0.9", BlockList: []string{"203.0.113.0/24"}}, "203.0.113.3", verdictBlock, "203.0.113.3"},
	{&DestinationPolicy{Default: PolicyForceTarget, Target: "10.0.0.9"}, "2001:db8::1", verdictBlock, "2001:db8::1"},
	{&DestinationPolicy{Default: PolicyForceTarget, Target: "2001:db8::9"}, "2001:db8::1", verdictForce, "2001:db8::9"},
	{&DestinationPolicy{Default: PolicyAllow, BlockList: []string{"2001:db8::/32"}}, "2001:db8::1", verdictBlock, "2001:db8::1"},
}

func TestPolicyTable(t *testing.T) {
	cases := policyTable
	for i, tc := range cases {
		p, err := compilePolicy(tc.policy)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		v, target := p.decide(netip.MustParseAddr(tc.dst))
		if v != tc.want || target.String() != tc.target {
			t.Errorf("case %d (%+v, %s): got %v %v, want %v %v", i, tc.policy, tc.dst, v, target, tc.want, tc.target)
		}
	}
	bad := []struct {
		p     DestinationPolicy
		field string
	}{
		{DestinationPolicy{Default: "maybe"}, "destinationPolicy.default"},
		{DestinationPolicy{Default: PolicyForceTarget}, "destinationPolicy.target"},
		{DestinationPolicy{Default: PolicyForceTarget, Target: "nowhere"}, "destinationPolicy.target"},
		{DestinationPolicy{Default: PolicyBlock, Target: "1.2.3.4"}, "destinationPolicy.target"},
		{DestinationPolicy{AllowList: []string{"1.2.3.4/40"}}, "destinationPolicy.allowList[0]"},
		{DestinationPolicy{BlockList: []string{"ok", "1.1.1.1"}}, "destinationPolicy.blockList[0]"},
	}
	for _, tc := range bad {
		_, err := compilePolicy(&tc.p)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("%+v: %v, want ConfigError on %s", tc.p, err, tc.field)
		}
		cfg := serverConfig(t, "10.8.0.0/24")
		cfg.DestinationPolicy = &tc.p
		if _, err := NewServer(cfg); !errors.As(err, &ce) {
			t.Errorf("NewServer accepted policy %+v", tc.p)
		}
	}
}

func TestOutboundProxyProtocolCarriesTunnelSource(t *testing.T) {
	s := newNATHub(t, func(c *ServerConfig) { c.SocketForwardProxyProtocol = true })
	c := netClient(t, s, "alice", nil)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &proxyproto.Listener{Listener: raw}
	seen := make(chan string, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		seen <- conn.RemoteAddr().String()
		io.Copy(io.Discard, conn)
	}()
	defer ln.Close()
	conn, err := c.Dial(context.Background(), "tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("hi"))
	local := conn.LocalAddr().String()
	defer conn.Close()
	select {
	case got := <-seen:
		if got != local {
			t.Fatalf("server saw %s, client is %s", got, local)
		}
		if ap := netip.MustParseAddrPort(got); ap.Addr().String() != "10.8.0.2" {
			t.Fatalf("source %s is not the tunnel address", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server got no connection")
	}
}

// tcpSYN builds a TCP SYN from src to dst.
func tcpSYN(src, dst netip.AddrPort, seq uint32) []byte {
	const ipLen, tcpLen = 20, 20
	b := make([]byte, ipLen+tcpLen)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], ipLen+tcpLen)
	b[8] = 64
	b[9] = 6
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	copy(b[12:], s4[:])
	copy(b[16:], d4[:])
	binary.BigEndian.PutUint16(b[10:], ^packet.Checksum(b[:ipLen], 0))
	t := b[ipLen:]
	binary.BigEndian.PutUint16(t[0:], src.Port())
	binary.BigEndian.PutUint16(t[2:], dst.Port())
	binary.BigEndian.PutUint32(t[4:], seq)
	t[12] = 5 << 4
	t[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(t[14:], 65535)
	binary.BigEndian.PutUint16(t[16:], ^packet.Checksum(t, packet.PseudoHeaderSum(src.Addr(), dst.Addr(), 6, tcpLen)))
	return b
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestSYNFloodLeavesHubServing sends 10,000 SYNs from one client to open and
// closed ports; another client keeps working and memory comes back.
func TestSYNFloodLeavesHubServing(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 2000
	}
	open := tcpEcho(t)
	closedLn, _ := net.Listen("tcp", "127.0.0.1:0")
	closedPort := closedLn.Addr().(*net.TCPAddr).Port
	closedLn.Close()
	s := newNATHub(t, nil)
	h := &testHub{Server: s}
	flooder := h.newClient(t, "flooder", nil)
	good := netClient(t, s, "good", nil)

	before := heapInUse()
	openPort := uint16(open.Addr().(*net.TCPAddr).Port)
	lo := netip.MustParseAddr("127.0.0.1")
	for i := range n {
		port := openPort
		if i%2 == 1 {
			port = uint16(closedPort)
		}
		syn := tcpSYN(netip.AddrPortFrom(flooder.ip, uint16(10000+i%50000)), netip.AddrPortFrom(lo, port), uint32(i))
		if err := flooder.engine.Inject(syn); err != nil {
			t.Fatal(err)
		}
		if i%200 == 199 {
			// Let the flooder's own send queue drain, so the SYNs reach the hub.
			time.Sleep(5 * time.Millisecond)
		}
	}
	// Sample the heap while the hub works through the flood.
	eng := s.engine.(*netstack.Engine)
	peak := heapInUse()
	settled := func() uint64 {
		st := eng.Stats()
		return st.TCPForwarded + st.DialFailed + st.Refused
	}
	for last, stable := uint64(0), 0; stable < 10; {
		time.Sleep(100 * time.Millisecond)
		peak = max(peak, heapInUse())
		if cur := settled(); cur == last {
			stable++
		} else {
			last, stable = cur, 0
		}
	}
	// The other client is served while the flood is handled.
	ln := tcpEcho(t)
	conn, err := good.Dial(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("good client during flood: %v", err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write([]byte("still here"))
	buf := make([]byte, 10)
	if _, err := io.ReadFull(conn, buf); err != nil {
		t.Fatalf("good client during flood: %v", err)
	}
	conn.Close()
	st := eng.Stats()
	t.Logf("%d SYNs sent, %d reached the hub (%d lost in the flooder's queue): heap in use %d KiB before, peak %d KiB; engine %+v",
		n, s.Statistics().PacketsIn, flooder.Statistics().Drops.QueueFull, before>>10, peak>>10, st)
	if peak > before+256<<20 {
		t.Fatalf("heap grew by %d MiB under the flood", (peak-before)>>20)
	}
	// Half-open flows (the flooder never completes a handshake) time out in
	// the stack; then the memory is back.
	start := time.Now()
	waitFor(t, 3*time.Minute, "half-open flows expire", func() bool {
		st := eng.Stats()
		return st.ActiveTCP == 0 && st.HandshakingTCP == 0
	})
	after := heapInUse()
	t.Logf("flows gone %v later: heap in use %d KiB", time.Since(start).Round(time.Second), after>>10)
	if after > before+32<<20 {
		t.Fatalf("heap %d KiB after the flood, %d KiB before", after>>10, before>>10)
	}
}

// TestEnableNATDecidesWhetherTrafficLeavesTheSubnet reaches a listener on the
// hub's loopback, which the destination policy allows, through the userspace
// NAT: with enableNat it answers; without, the flow never leaves the tunnel
// and is counted as a policy drop, while the hub's own address and other
// clients stay reachable.
func TestEnableNATDecidesWhetherTrafficLeavesTheSubnet(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpServer(t, ln, "outside")
	outside := "http://" + ln.Addr().String() + "/"

	for _, enable := range []bool{true, false} {
		t.Run(fmt.Sprint("enableNat=", enable), func(t *testing.T) {
			s := newNATHub(t, func(c *ServerConfig) { c.EnableNAT = enable })
			hubLn, err := s.Listen("tcp", ":80")
			if err != nil {
				t.Fatal(err)
			}
			httpServer(t, hubLn, "hub")
			a := netClient(t, s, "alice", nil)
			b := netClient(t, s, "bob", nil)
			bLn, err := b.Listen("tcp", ":8080")
			if err != nil {
				t.Fatal(err)
			}
			httpServer(t, bLn, "bob")

			if body := httpGet(t, a.Dial, "http://10.8.0.1/"); !strings.HasPrefix(body, "hub from 10.8.0.2:") {
				t.Fatalf("hub service: %q", body)
			}
			if body := httpGet(t, a.Dial, "http://10.8.0.3:8080/"); !strings.HasPrefix(body, "bob from 10.8.0.2:") {
				t.Fatalf("client to client: %q", body)
			}
			before := s.Statistics().Drops.Policy
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			conn, err := a.Dial(ctx, "tcp", ln.Addr().String())
			if enable {
				if err != nil {
					t.Fatalf("enableNat true: dial outside: %v", err)
				}
				conn.Close()
				if body := httpGet(t, a.Dial, outside); !strings.HasPrefix(body, "outside from 127.0.0.1:") {
					t.Fatalf("outside: %q", body)
				}
				return
			}
			if err == nil {
				conn.Close()
				t.Fatal("enableNat false: a flow left the tunnel subnet")
			}
			waitFor(t, 5*time.Second, "policy drops counted", func() bool { return s.Statistics().Drops.Policy > before })
		})
	}
}

// TestFlowPolicyRefusesOutsideWithoutNAT checks the engine's own gate: even a
// flow that reached the userspace NAT (here: handed in directly) does not
// leave the subnet, forceTarget or not, unless enableNat is set.
func TestFlowPolicyRefusesOutsideWithoutNAT(t *testing.T) {
	src := netip.MustParseAddrPort("10.8.0.2:4000")
	dst := netip.MustParseAddrPort("192.0.2.1:80")
	for _, enable := range []bool{false, true} {
		cfg := serverConfig(t, "10.8.0.0/24")
		cfg.EnableNAT = enable
		cfg.DestinationPolicy = &DestinationPolicy{Default: PolicyForceTarget, Target: "127.0.0.1"}
		s, err := NewServer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		target, ok := s.flowPolicy(netstack.TCP, src, dst)
		s.Close()
		if ok != enable {
			t.Errorf("enableNat %v: flow allowed %v", enable, ok)
		}
		if enable && target != netip.MustParseAddrPort("127.0.0.1:80") {
			t.Errorf("enableNat true: target %v", target)
		}
	}
}
