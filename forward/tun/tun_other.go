//go:build !linux

package tun

import (
	"errors"
	"syscall"

	"github.com/warrenvpn/warren/forward"
)

// ErrUnsupported is Start's error on operating systems other than Linux.
var ErrUnsupported = errors.New("forward/tun: the TUN engine runs on Linux only; use forwardingMode socket")

// Engine is the TUN engine; on this operating system Start always fails.
type Engine struct{ opts Options }

var _ forward.Engine = (*Engine)(nil)

// New returns an Engine whose Start fails with ErrUnsupported.
func New(opts Options) *Engine { return &Engine{opts: opts} }

// Start returns ErrUnsupported.
func (e *Engine) Start(forward.Config) error { return ErrUnsupported }

// Send returns ErrUnsupported.
func (e *Engine) Send([][]byte, int) error { return ErrUnsupported }

// Close does nothing.
func (e *Engine) Close() error { return nil }

// MarkControl returns nil: there is no full tunnel on this operating
// system, so sockets need no mark.
func MarkControl(uint32) func(network, address string, c syscall.RawConn) error { return nil }
