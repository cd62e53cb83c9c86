package quic

import (
	"net"
	"syscall"
	"testing"
)

func readBuffer(t *testing.T, c *net.UDPConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		n, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	return n
}

// TestListenerSocketHasRoomForManyClients: the listener's socket, which
// all its clients share, gets a receive buffer of listenReadBuffer where
// the process may set one past net.core.rmem_max, rather than the 7 MiB
// quic-go asks for one connection.
func TestListenerSocketHasRoomForManyClients(t *testing.T) {
	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := probe.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	_ = rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, listenReadBuffer)
	})
	probe.Close()
	if serr != nil {
		t.Skipf("this process may not set a receive buffer past rmem_max: %v", serr)
	}
	l := listen(t, ListenConfig{})
	// Linux reports twice what was set, the rest for its bookkeeping.
	if got := readBuffer(t, l.udp); got < listenReadBuffer {
		t.Errorf("listener's receive buffer is %d bytes, want at least %d", got, listenReadBuffer)
	}
}
