// Command flooder is the flooder of the hub's flood tests (flood_test.go):
// the test builds it without the race detector, so it floods as fast as an
// attacker's program would, and runs it as a separate process, so the hub's
// CPU time can be read apart from the flooder's.
//
//	flooder KIND TARGET SRC[+SRC...] WORKERS RATE
//
// RATE paces the attempts of all workers together, per second; 0 leaves
// them unpaced (each worker starts an attempt when its last one ends).
// KIND is ws, quic, quic-initial, wg-random or wg-mac1. It floods until its standard input
// closes, printing "flood ATTEMPTS DELIVERED" every 100 ms and at the end.
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/quic-go/quic-go"
	"golang.org/x/crypto/blake2s"
	"golang.org/x/time/rate"

	"github.com/warrenvpn/warren"
	"github.com/warrenvpn/warren/codec"
	wquic "github.com/warrenvpn/warren/transport/quic"
)

// pace paces the attempts.
var pace *rate.Limiter

func main() {
	if len(os.Args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: flooder KIND TARGET SRC[+SRC...] WORKERS RATE")
		os.Exit(2)
	}
	kind, target, srcs := os.Args[1], os.Args[2], strings.Split(os.Args[3], "+")
	workers, _ := strconv.Atoi(os.Args[4])
	perSec, _ := strconv.Atoi(os.Args[5])
	pace = rate.NewLimiter(rate.Inf, 1)
	if perSec > 0 {
		pace = rate.NewLimiter(rate.Limit(perSec), max(perSec/100, 1))
	}
	ctx, cancel := context.WithCancel(context.Background())
	var attempts, delivered atomic.Uint64
	var wg sync.WaitGroup
	for i := range workers {
		src := srcs[i%len(srcs)]
		wg.Go(func() {
			switch kind {
			case "ws":
				floodWS(ctx, target, src, &attempts, &delivered)
			case "quic":
				floodQUIC(ctx, target, src, &attempts, &delivered)
			case "quic-initial":
				floodInitials(ctx, target, src, &attempts, &delivered)
			case "wg-random", "wg-mac1":
				floodWG(ctx, kind, target, src, &attempts, &delivered)
			default:
				panic("unknown flood kind " + kind)
			}
		})
	}
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				fmt.Printf("flood %d %d\n", attempts.Load(), delivered.Load())
				return
			case <-tick.C:
				fmt.Printf("flood %d %d\n", attempts.Load(), delivered.Load())
			}
		}
	})
	_, _ = io.Copy(io.Discard, os.Stdin) // until the test closes it
	cancel()
	wg.Wait()
}

// bogusInit returns a HandshakeInit frame whose Noise message 1 is random
// bytes of a plausible length: it parses, and fails to authenticate.
func bogusInit() []byte {
	msg := make([]byte, 96+64)
	_, _ = rand.Read(msg)
	f, err := codec.AppendFrame(nil, codec.HandshakeInit, msg)
	if err != nil {
		panic(err)
	}
	return f
}

// floodWS opens WebSocket connections from src as fast as it can, each
// sending one bogus HandshakeInit.
func floodWS(ctx context.Context, target, src string, attempts, delivered *atomic.Uint64) {
	nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	d := &websocket.Dialer{
		NetDialContext: nd.DialContext,
		// The cheapest TLS handshake a client can make.
		TLSClientConfig:  &tls.Config{InsecureSkipVerify: true, CurvePreferences: []tls.CurveID{tls.X25519}},
		HandshakeTimeout: 5 * time.Second,
	}
	init := bogusInit()
	for pace.Wait(ctx) == nil {
		attempts.Add(1)
		c, _, err := d.DialContext(ctx, "wss://"+target+"/", http.Header{})
		if err != nil {
			continue
		}
		if c.WriteMessage(websocket.BinaryMessage, init) == nil {
			delivered.Add(1)
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _, _ = c.ReadMessage() // the hub closes it unanswered
		}
		c.Close()
	}
}

// floodQUIC opens QUIC connections from src as fast as it can (answering
// Retries, as quic-go does), each sending one bogus HandshakeInit.
func floodQUIC(ctx context.Context, target, src string, attempts, delivered *atomic.Uint64) {
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(src)})
	if err != nil {
		panic(err)
	}
	tr := &quic.Transport{Conn: udp}
	defer udp.Close()
	defer tr.Close()
	raddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		panic(err)
	}
	tc := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{wquic.ALPN}, CurvePreferences: []tls.CurveID{tls.X25519}}
	qc := &quic.Config{EnableDatagrams: true, HandshakeIdleTimeout: 2 * time.Second}
	init := bogusInit()
	for pace.Wait(ctx) == nil {
		attempts.Add(1)
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := tr.Dial(dctx, raddr, tc, qc)
		if err != nil {
			cancel()
			continue
		}
		if st, err := c.OpenStreamSync(dctx); err == nil {
			if _, err := st.Write(init); err == nil {
				delivered.Add(1)
				_, _ = st.Read(make([]byte, 1)) // the hub closes it unanswered
			}
		}
		cancel()
		_ = c.CloseWithError(0, "")
	}
}

// floodWG sends WireGuard handshake initiations to target from src as fast
// as it can: random bytes ("wg-random"), or with a valid MAC1 for the key
// in target's "@key" suffix and a random, unknown, initiator ("wg-mac1").
func floodWG(ctx context.Context, kind, target, src string, attempts, delivered *atomic.Uint64) {
	addr, keyText, _ := strings.Cut(target, "@")
	c, err := net.Dial("udp", addr)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	_ = src // UDP floods come from 127.0.0.2 through the route; the source is not what they test
	var mac1Key [32]byte
	if kind == "wg-mac1" {
		var pub warren.Key
		if err := pub.UnmarshalText([]byte(keyText)); err != nil {
			panic(err)
		}
		h, _ := blake2s.New256(nil)
		h.Write([]byte("mac1----"))
		h.Write(pub[:])
		h.Sum(mac1Key[:0])
	}
	msg := make([]byte, 148)
	for pace.Wait(ctx) == nil {
		_, _ = rand.Read(msg)
		msg[0], msg[1], msg[2], msg[3] = 1, 0, 0, 0 // MessageInitiation
		clear(msg[132:])                            // no MAC2: no cookie
		if kind == "wg-mac1" {
			m, _ := blake2s.New128(mac1Key[:])
			m.Write(msg[:116])
			copy(msg[116:132], m.Sum(nil))
		}
		attempts.Add(1)
		if _, err := c.Write(msg); err == nil {
			delivered.Add(1)
		}
	}
}

// floodInitials sends QUIC Initial packets from src as fast as it can: a
// valid long header with a fresh connection ID, padded to 1200 bytes, and a
// random payload that does not decrypt. Each is a new connection attempt
// that costs the sender no cryptography; it never answers a Retry.
func floodInitials(ctx context.Context, target, src string, attempts, delivered *atomic.Uint64) {
	laddr := &net.UDPAddr{IP: net.ParseIP(src)}
	raddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		panic(err)
	}
	c, err := net.DialUDP("udp", laddr, raddr)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	go func() { // drain the Retries and refusals
		buf := make([]byte, 2048)
		for {
			if _, err := c.Read(buf); err != nil && ctx.Err() != nil {
				return
			}
		}
	}()
	pkt := make([]byte, 1200)
	for pace.Wait(ctx) == nil {
		_, _ = rand.Read(pkt)
		pkt[0] = 0xc3                               // long header, Initial, 4-byte packet number
		pkt[1], pkt[2], pkt[3], pkt[4] = 0, 0, 0, 1 // QUIC v1
		pkt[5] = 8                                  // DCID length; DCID random at 6..13
		pkt[14] = 8                                 // SCID length; SCID random at 15..22
		pkt[23] = 0                                 // no token
		n := len(pkt) - 26                          // the rest: packet number and payload
		pkt[24], pkt[25] = 0x40|byte(n>>8), byte(n)
		attempts.Add(1)
		if _, err := c.Write(pkt); err == nil {
			delivered.Add(1)
		}
	}
	_ = c.SetReadDeadline(time.Now())
}
