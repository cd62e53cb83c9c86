//go:build !linux

package quic

import "net"

// growReadBuffer sets the socket's receive buffer to size bytes, as far as
// the system allows.
func growReadBuffer(c *net.UDPConn, size int) { _ = c.SetReadBuffer(size) }
