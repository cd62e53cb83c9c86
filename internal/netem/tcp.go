package netem

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// chunkQueue bounds the chunks in flight per direction, so a fast sender
// meets back-pressure instead of filling memory.
const chunkQueue = 256

// TCPProxy forwards TCP connections from its address to a target, delaying
// each chunk of bytes read. It never drops or reorders bytes.
type TCPProxy struct {
	ln     net.Listener
	target string
	shape  *shaper

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// ListenTCP starts a TCP proxy on a loopback port toward target ("host:port").
// It refuses a Config with loss.
func ListenTCP(target string, cfg Config) (*TCPProxy, error) {
	if err := errors.Join(cfg.Up.validate(true), cfg.Down.validate(true)); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("netem: %w", err)
	}
	p := &TCPProxy{ln: ln, target: target, shape: newShaper(cfg), conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go func() { defer p.wg.Done(); p.accept() }()
	return p, nil
}

// Addr returns the address clients connect to.
func (p *TCPProxy) Addr() *net.TCPAddr { return p.ln.Addr().(*net.TCPAddr) }

// Set changes both directions' delay from now on.
func (p *TCPProxy) Set(up, down Link) error {
	if err := errors.Join(up.validate(true), down.validate(true)); err != nil {
		return err
	}
	p.shape.set(up, down)
	return nil
}

// Close stops the proxy, closes every proxied connection and waits for its
// goroutines.
func (p *TCPProxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return fmt.Errorf("netem: %w", net.ErrClosed)
	}
	p.closed = true
	err := p.ln.Close()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

// track registers c to be closed by Close; false if the proxy is closed.
func (p *TCPProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *TCPProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *TCPProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			t, err := net.Dial("tcp", p.target)
			if err != nil {
				return
			}
			if !p.track(t) {
				t.Close()
				return
			}
			defer p.untrack(t)
			var pipes sync.WaitGroup
			pipes.Go(func() { p.pipe(t, c, true) })
			pipes.Go(func() { p.pipe(c, t, false) })
			pipes.Wait()
		}()
	}
}

type chunk struct {
	at   time.Time
	data []byte
}

// pipe copies src to dst, each chunk delivered no earlier than its delay and
// no earlier than the chunk before it. At EOF it half-closes dst; on an error
// it closes both.
func (p *TCPProxy) pipe(dst, src net.Conn, up bool) {
	ch := make(chan chunk, chunkQueue)
	var writer sync.WaitGroup
	writer.Go(func() {
		timer := time.NewTimer(0)
		defer timer.Stop()
		failed := false
		for c := range ch {
			if failed {
				continue // drain until the reader stops
			}
			if d := time.Until(c.at); d > 0 {
				timer.Reset(d)
				<-timer.C
			}
			if _, err := dst.Write(c.data); err != nil {
				failed = true
				src.Close()
				dst.Close()
			}
		}
		if !failed {
			if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
		}
	})
	var last time.Time
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			delay, _ := p.shape.fate(up)
			at := time.Now().Add(delay)
			if at.Before(last) {
				at = last
			}
			last = at
			ch <- chunk{at: at, data: append([]byte(nil), buf[:n]...)}
		}
		if err != nil {
			break
		}
	}
	close(ch)
	writer.Wait()
}
