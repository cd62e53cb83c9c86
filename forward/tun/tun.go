//go:build linux

package tun

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/warrenvpn/warren/forward"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// Engine is a forward.Engine over a kernel TUN device.
type Engine struct {
	opts Options

	cfg    forward.Config
	log    *slog.Logger
	dev    wgtun.Device
	rules  *ruleset
	fwd    *forwarding
	full   *fullTunnel
	batch  int
	pool   sync.Pool // *writeBatch
	closed atomic.Bool
	done   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex // serializes rule changes (health check, Close)
}

var _ forward.Engine = (*Engine)(nil)

// New returns an Engine that does nothing until Start.
func New(opts Options) *Engine {
	if opts.Name == "" {
		opts.Name = DefaultName
	}
	if opts.HealthInterval == 0 {
		opts.HealthInterval = DefaultHealthInterval
	}
	return &Engine{opts: opts, done: make(chan struct{})}
}

// Name is the TUN device's name.
func (e *Engine) Name() string { return e.opts.Name }

// Table is the name of the engine's nftables table (family inet).
func (e *Engine) Table() string { return tablePrefix + e.opts.Name }

// Start creates the device, gives it cfg.LocalIP on cfg.Subnet and cfg.MTU,
// adds routes, installs the nftables table and starts reading.
func (e *Engine) Start(cfg forward.Config) (err error) {
	if e.closed.Load() {
		return fmt.Errorf("forward/tun: start: %w", net.ErrClosed)
	}
	if e.dev != nil {
		return errors.New("forward/tun: start: already started")
	}
	if cfg.Deliver == nil {
		return errors.New("forward/tun: Config.Deliver is nil")
	}
	if !cfg.Subnet.IsValid() || !cfg.LocalIP.IsValid() || !cfg.Subnet.Contains(cfg.LocalIP) {
		return fmt.Errorf("forward/tun: local address %s is not inside subnet %s", cfg.LocalIP, cfg.Subnet)
	}
	if cfg.MTU <= 0 {
		return fmt.Errorf("forward/tun: MTU %d is not positive", cfg.MTU)
	}
	if len(e.opts.Name) > 15 {
		return fmt.Errorf("forward/tun: device name %q is longer than 15 bytes", e.opts.Name)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("forward/tun: no /dev/net/tun on this host (load the tun module, or use forwardingMode socket): %w", err)
	}
	e.cfg = cfg
	e.log = cfg.Logger
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	cfg.Subnet = cfg.Subnet.Masked()
	e.cfg.Subnet = cfg.Subnet

	if err := removeStaleLink(e.opts.Name); err != nil {
		return permErr("removing a leftover device", err)
	}
	dev, err := wgtun.CreateTUN(e.opts.Name, cfg.MTU)
	if err != nil {
		return permErr("creating TUN device "+e.opts.Name, err)
	}
	e.dev = dev
	defer func() {
		if err != nil {
			e.teardown()
		}
	}()
	e.wg.Add(1)
	go func() {
		// The device's netlink listener blocks on its event channel if
		// nobody reads it; it closes the channel when the device closes.
		defer e.wg.Done()
		for range dev.Events() {
		}
	}()
	var routes []netip.Prefix
	full := &fullTunnel{mark: e.opts.FwMark}
	if full.mark == 0 {
		full.mark = DefaultFwMark
	}
	for _, r := range e.opts.Routes {
		switch {
		case r.Bits() != 0:
			routes = append(routes, r)
		case r.Addr().Is4() == cfg.Subnet.Addr().Is4():
			full.via = append(full.via, family(r))
		default:
			full.closed = append(full.closed, family(r))
		}
	}
	if err := configureLink(e.opts.Name, cfg.LocalIP, cfg.Subnet, routes); err != nil {
		return permErr("configuring device "+e.opts.Name, err)
	}
	if len(full.via)+len(full.closed) == 0 {
		full = nil
	}

	out := ""
	if e.opts.NAT {
		out = e.opts.NATInterface
		if out == "" {
			if out, err = defaultInterface(cfg.Subnet.Addr().Is4()); err != nil {
				return err
			}
		}
	}
	e.rules = &ruleset{
		table:  e.Table(),
		dev:    e.opts.Name,
		subnet: cfg.Subnet,
		natOut: out,
		policy: e.opts.Policy,
	}
	if full != nil {
		e.rules.mark = full.mark
	}
	if err := e.rules.apply(); err != nil {
		e.rules = nil
		return permErr("installing nftables table "+e.Table(), err)
	}
	if full != nil {
		l, err := netlink.LinkByName(e.opts.Name)
		if err != nil {
			return permErr("configuring device "+e.opts.Name, err)
		}
		full.link = l.Attrs().Index
		e.full = full
		if err := full.install(); err != nil {
			return permErr(fmt.Sprintf("installing policy routing (fwmark %#x, table %d)", full.mark, full.mark), err)
		}
	}
	if e.opts.EnableForwarding {
		if e.fwd, err = enableForwarding(cfg.Subnet.Addr().Is4()); err != nil {
			return permErr("enabling IP forwarding", err)
		}
	}

	e.batch = dev.BatchSize()
	e.pool.New = func() any { return &writeBatch{} }
	e.wg.Add(1)
	go e.readLoop()
	if e.opts.HealthInterval > 0 {
		e.wg.Add(1)
		go e.healthLoop()
	}
	e.log.Info("tun engine started", "device", e.opts.Name, "table", e.Table(), "nat", out, "offloads", e.batch > 1, "fullTunnel", full != nil)
	return nil
}

// writeBatch is Send's scratch for one batch: the packets as handed to the
// device, and the buffers they are copied into when offloads are on.
type writeBatch struct {
	bufs   [][]byte
	copies [][]byte
}

// Send writes a batch of packets from clients, bufs[i][offset:], to the
// device.
//
// Without offloads the device writes each packet where it lies, from the
// caller's buffer: no copy. With offloads (virtio-net headers, GRO) each
// packet is copied into a buffer of Offset+64 KiB from a pool: the
// device's GRO coalesces a flow's segments into the first one's buffer, so
// it needs room behind each packet that no caller's buffer has, and one
// write per flow instead of one per packet is worth far more than the copy
// (BenchmarkTCPThroughput/tun: 76-98 MB/s with the copy, 37-59 MB/s
// writing in place without coalescing, same run, loaded machine).
func (e *Engine) Send(bufs [][]byte, offset int) error {
	if e.closed.Load() || e.dev == nil {
		return fmt.Errorf("forward/tun: %w", net.ErrClosed)
	}
	wb := e.pool.Get().(*writeBatch)
	defer e.pool.Put(wb)
	out := wb.bufs[:0]
	devOffset := offset
	if e.batch > 1 {
		devOffset = Offset
	}
	for _, b := range bufs {
		p := b[offset:]
		if len(p) == 0 {
			continue
		}
		if e.batch <= 1 {
			if len(p) <= e.cfg.MTU {
				out = append(out, b)
			}
			continue
		}
		if len(p) > maxSegment {
			continue
		}
		k := len(out)
		if k == len(wb.copies) {
			wb.copies = append(wb.copies, make([]byte, Offset+maxSegment))
		}
		c := wb.copies[k][:cap(wb.copies[k])]
		out = append(out, c[:Offset+copy(c[Offset:], p)])
	}
	wb.bufs = out
	defer clear(out)
	if len(out) == 0 {
		return nil
	}
	_, err := e.dev.Write(out, devOffset)
	if err != nil {
		if errors.Is(err, os.ErrClosed) {
			return fmt.Errorf("forward/tun: %w", net.ErrClosed)
		}
		return fmt.Errorf("forward/tun: write: %w", err)
	}
	return nil
}

// readLoop reads batches from the device and delivers them to clients.
func (e *Engine) readLoop() {
	defer e.wg.Done()
	bufs := make([][]byte, e.batch)
	sizes := make([]int, e.batch)
	out := make([][]byte, e.batch)
	for i := range bufs {
		// Tailroom behind the packet lets a session seal it in place.
		bufs[i] = make([]byte, Offset+e.cfg.MTU+forward.Tailroom)
	}
	for {
		n, err := e.dev.Read(bufs, sizes, Offset)
		if err != nil {
			if e.closed.Load() || errors.Is(err, os.ErrClosed) {
				return
			}
			e.log.Debug("tun read failed", "err", err)
			if n == 0 {
				// Do not spin on an error that repeats.
				select {
				case <-e.done:
					return
				case <-time.After(10 * time.Millisecond):
				}
				continue
			}
		}
		m := 0
		for i := 0; i < n; i++ {
			p := bufs[i][:Offset+sizes[i]]
			if multicast(p[Offset:]) {
				// The kernel's own chatter on the link (MLD reports,
				// router solicitations) is for no client.
				continue
			}
			out[m] = p
			m++
		}
		if m > 0 {
			e.cfg.Deliver(out[:m], Offset)
		}
	}
}

// healthLoop re-applies the rules whenever they are not all there.
func (e *Engine) healthLoop() {
	defer e.wg.Done()
	t := time.NewTicker(e.opts.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-e.done:
			return
		case <-t.C:
		}
		e.mu.Lock()
		if e.closed.Load() {
			e.mu.Unlock()
			return
		}
		what, err := e.rules.check()
		if err == nil && what != "" {
			if err = e.rules.apply(); err == nil {
				e.log.Warn("tun engine: nftables rules were changed; re-applied", "table", e.Table(), "what", what)
			}
		}
		if err == nil && what == "" && e.full != nil {
			// A full tunnel missing a rule leaks what it should carry.
			what, err = e.full.check()
			if err == nil && what != "" {
				if err = e.full.install(); err == nil {
					e.log.Warn("tun engine: policy routing was changed; re-applied", "fwmark", e.full.mark, "what", what)
				}
			}
		}
		e.mu.Unlock()
		switch {
		case err != nil:
			e.log.Warn("tun engine: checking nftables rules and routing failed", "table", e.Table(), "err", err)
		case what != "" && e.opts.OnRepair != nil:
			e.opts.OnRepair(what)
		}
	}
}

// Close removes the nftables table, restores IP forwarding, removes the
// device (and with it its addresses and routes) and waits for the
// engine's goroutines. Close after Close returns net.ErrClosed.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed.Swap(true) {
		e.mu.Unlock()
		return fmt.Errorf("forward/tun: %w", net.ErrClosed)
	}
	close(e.done)
	e.mu.Unlock()
	return e.teardown()
}

// teardown undoes what Start did, in reverse.
func (e *Engine) teardown() error {
	e.closed.Store(true)
	var errs []error
	if e.full != nil {
		errs = append(errs, e.full.remove())
		e.full = nil
	}
	if e.fwd != nil {
		errs = append(errs, e.fwd.restore())
		e.fwd = nil
	}
	if e.rules != nil {
		e.mu.Lock()
		errs = append(errs, e.rules.remove())
		e.mu.Unlock()
		e.rules = nil
	}
	if e.dev != nil {
		errs = append(errs, e.dev.Close())
		// Closing the last descriptor deletes a non-persistent device; make
		// sure nothing is left even if it was made persistent meanwhile.
		errs = append(errs, removeStaleLink(e.opts.Name))
	}
	e.wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("forward/tun: close: %w", err)
	}
	return nil
}

// multicast reports whether p is addressed to a multicast group.
func multicast(p []byte) bool {
	switch {
	case len(p) >= 20 && p[0]>>4 == 4:
		return p[16]&0xf0 == 0xe0
	case len(p) >= 40 && p[0]>>4 == 6:
		return p[24] == 0xff
	}
	return false
}
