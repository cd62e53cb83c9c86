package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/warrenvpn/warren"
)

// forward is one --forward LISTEN=TARGET: TCP connections accepted on
// LISTEN (a local address) are carried through the tunnel to TARGET.
type forward struct {
	listen, target string
}

func parseForward(s string) (forward, error) {
	l, t, ok := strings.Cut(s, "=")
	if !ok || l == "" || t == "" {
		return forward{}, usagef("--forward %q: want LISTEN=TARGET, e.g. 127.0.0.1:8080=10.8.0.1:80", s)
	}
	for _, a := range []string{l, t} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return forward{}, usagef("--forward %q: %v", s, err)
		}
	}
	return forward{l, t}, nil
}

// forwarder runs the --forward listeners of one client until close.
type forwarder struct {
	cl  *warren.Client
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	lns    []net.Listener
	conns  map[net.Conn]struct{}
}

func newForwarder(cl *warren.Client, log *slog.Logger) *forwarder {
	ctx, cancel := context.WithCancel(context.Background())
	return &forwarder{cl: cl, log: log, ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
}

// add listens on f.listen and starts forwarding.
func (fw *forwarder) add(f forward) (net.Addr, error) {
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return nil, fmt.Errorf("--forward: %w", err)
	}
	fw.mu.Lock()
	fw.lns = append(fw.lns, ln)
	fw.mu.Unlock()
	fw.wg.Add(1)
	go func() {
		defer fw.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fw.wg.Add(1)
			go func() {
				defer fw.wg.Done()
				fw.relay(c, f.target)
			}()
		}
	}()
	return ln.Addr(), nil
}

// track adds or removes a connection that close must end.
func (fw *forwarder) track(c net.Conn, add bool) bool {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if add {
		if fw.ctx.Err() != nil {
			return false
		}
		fw.conns[c] = struct{}{}
	} else {
		delete(fw.conns, c)
	}
	return true
}

func (fw *forwarder) relay(local net.Conn, target string) {
	defer local.Close()
	ctx, cancel := context.WithTimeout(fw.ctx, 30*time.Second)
	remote, err := fw.cl.Dial(ctx, "tcp", target)
	cancel()
	if err != nil {
		fw.log.Warn("forward: dialling through the tunnel failed", "target", target, "err", err)
		return
	}
	defer remote.Close()
	if !fw.track(local, true) {
		return
	}
	defer fw.track(local, false)
	fw.track(remote, true)
	defer fw.track(remote, false)
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(remote, local)
		closeWrite(remote)
	}()
	io.Copy(local, remote)
	closeWrite(local)
	<-done
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		c.Close()
	}
}

// close stops the listeners, ends the relayed connections and waits.
func (fw *forwarder) close() {
	fw.mu.Lock()
	fw.cancel()
	for _, ln := range fw.lns {
		ln.Close()
	}
	for c := range fw.conns {
		c.Close()
	}
	fw.mu.Unlock()
	fw.wg.Wait()
}
