package quic

import (
	"net"
	"syscall"
)

// growReadBuffer sets the socket's receive buffer to size bytes, past the
// system's net.core.rmem_max where the process may (CAP_NET_ADMIN, as
// wireguard-go does for its sockets), and else as far as rmem_max allows.
func growReadBuffer(c *net.UDPConn, size int) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, size)
	}); err != nil || serr != nil {
		_ = c.SetReadBuffer(size)
	}
}
