package quic

import (
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"

	"github.com/warrenvpn/warren/codec"
)

// TestConnectionsUseGSO guards quic-go's GSO send path: both ends hand
// quic-go a *net.UDPConn, which it can batch full-size packets on with one
// sendmsg. It is skipped where the kernel or QUIC_GO_DISABLE_GSO turns GSO
// off.
func TestConnectionsUseGSO(t *testing.T) {
	if v, _ := strconv.ParseBool(os.Getenv("QUIC_GO_DISABLE_GSO")); v {
		t.Skip("QUIC_GO_DISABLE_GSO is set")
	}
	if !kernelHasUDPSegment(t) {
		t.Skip("the kernel has no UDP_SEGMENT")
	}
	l := listen(t, ListenConfig{})
	client, server := connect(t, l, frame(t, codec.HandshakeInit, nil))
	if _, err := server.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*Conn{"client": client, "server": server} {
		if !c.qc.ConnectionState().GSO {
			t.Errorf("%s: quic-go does not use GSO", name)
		}
	}
}

// udpSegment is Linux's UDP_SEGMENT socket option, which package syscall
// does not name.
const udpSegment = 103

// kernelHasUDPSegment reports whether a UDP socket here accepts the
// UDP_SEGMENT option, which is what quic-go checks before it uses GSO.
func kernelHasUDPSegment(t *testing.T) bool {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		_, serr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_UDP, udpSegment)
	}); err != nil {
		t.Fatal(err)
	}
	return serr == nil
}
