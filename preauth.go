package warren

import (
	"fmt"
	"strconv"
	"time"
)

// The range of the pre-auth timeouts. Below 100 ms no real client makes it
// across the Internet; a connection that has not authenticated in a minute
// is not a client worth waiting for, and a larger value only lets idle
// sockets pile up.
const (
	minPreAuthMs = 100
	maxPreAuthMs = 60_000
)

// checkPreAuth validates the pre-auth bounds: ProxyHeaderTimeoutMs,
// FirstByteTimeoutMs and PreAuthTimeoutMs.
func (c *ServerConfig) checkPreAuth() error {
	for _, f := range []struct {
		field string
		ms    int
	}{
		{"proxyHeaderTimeoutMs", c.ProxyHeaderTimeoutMs},
		{"firstByteTimeoutMs", c.FirstByteTimeoutMs},
		{"preAuthTimeoutMs", c.PreAuthTimeoutMs},
	} {
		if f.ms != 0 && (f.ms < minPreAuthMs || f.ms > maxPreAuthMs) {
			return configErr(f.field, strconv.Itoa(f.ms), fmt.Sprintf("must be 0 (the default) or %d to %d milliseconds", minPreAuthMs, maxPreAuthMs))
		}
	}
	return nil
}

// preAuthTimeout is PreAuthTimeoutMs, or its default.
func (c *ServerConfig) preAuthTimeout() time.Duration {
	if c.PreAuthTimeoutMs == 0 {
		return handshakeTimeout
	}
	return millis(c.PreAuthTimeoutMs)
}

// millis converts a count of milliseconds to a Duration; 0 stays 0, which
// the transports read as "the default".
func millis(ms int) time.Duration {
	return time.Duration(ms) * time.Millisecond
}
