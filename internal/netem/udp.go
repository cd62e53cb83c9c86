package netem

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// UDPProxy forwards datagrams between its address and a target, shaped. Each
// sender address gets its own socket toward the target, as behind a NAT.
type UDPProxy struct {
	ln     *net.UDPConn
	target *net.UDPAddr
	shape  *shaper
	sched  *scheduler

	mu     sync.Mutex
	peers  map[string]*net.UDPConn
	closed bool
	wg     sync.WaitGroup
}

// ListenUDP starts a UDP proxy on a loopback port toward target ("host:port").
func ListenUDP(target string, cfg Config) (*UDPProxy, error) {
	if err := cfg.Up.validate(false); err != nil {
		return nil, err
	}
	if err := cfg.Down.validate(false); err != nil {
		return nil, err
	}
	taddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, fmt.Errorf("netem: target: %w", err)
	}
	laddr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	if taddr.IP.To4() == nil && taddr.IP != nil {
		laddr.IP = net.IPv6loopback
	}
	ln, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("netem: %w", err)
	}
	p := &UDPProxy{ln: ln, target: taddr, shape: newShaper(cfg), sched: newScheduler(), peers: make(map[string]*net.UDPConn)}
	p.wg.Add(2)
	go func() { defer p.wg.Done(); p.sched.run() }()
	go func() { defer p.wg.Done(); p.readUp() }()
	return p, nil
}

// Addr returns the address senders send to.
func (p *UDPProxy) Addr() *net.UDPAddr { return p.ln.LocalAddr().(*net.UDPAddr) }

// Set changes both directions' behaviour from now on; datagrams already
// scheduled keep theirs.
func (p *UDPProxy) Set(up, down Link) error {
	if err := errors.Join(up.validate(false), down.validate(false)); err != nil {
		return err
	}
	p.shape.set(up, down)
	return nil
}

// Close stops the proxy, drops what is in flight and waits for its goroutines.
func (p *UDPProxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return fmt.Errorf("netem: %w", net.ErrClosed)
	}
	p.closed = true
	err := p.ln.Close()
	for _, c := range p.peers {
		c.Close()
	}
	p.mu.Unlock()
	close(p.sched.done)
	p.wg.Wait()
	return err
}

func (p *UDPProxy) readUp() {
	buf := make([]byte, 65535)
	for {
		n, from, err := p.ln.ReadFromUDP(buf)
		if err != nil {
			return // closed
		}
		up := p.peer(from)
		if up == nil {
			continue // closing, or no socket toward the target: dropped
		}
		p.forward(true, buf[:n], func(b []byte) { up.Write(b) })
	}
}

// peer returns the socket toward the target for sender from, made on first use.
func (p *UDPProxy) peer(from *net.UDPAddr) *net.UDPConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	key := from.String()
	if c := p.peers[key]; c != nil {
		return c
	}
	c, err := net.DialUDP("udp", nil, p.target)
	if err != nil {
		return nil
	}
	p.peers[key] = c
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		buf := make([]byte, 65535)
		for {
			n, err := c.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && !errors.Is(err, net.ErrClosed) {
					continue // ICMP unreachable from a target not yet up
				}
				return
			}
			p.forward(false, buf[:n], func(b []byte) { p.ln.WriteToUDP(b, from) })
		}
	}()
	return c
}

func (p *UDPProxy) forward(up bool, b []byte, write func([]byte)) {
	delay, drop := p.shape.fate(up)
	if drop {
		return
	}
	p.sched.add(time.Now().Add(delay), append([]byte(nil), b...), write)
}
