package handshake_test

import (
	"testing"

	"github.com/warrenvpn/warren/handshake"
)

func BenchmarkSealOpen1400(b *testing.B) {
	r := doHandshake(b, newKeypair(b), newKeypair(b))
	pt := make([]byte, 1400)
	sealed := make([]byte, 0, len(pt)+handshake.Overhead)
	opened := make([]byte, 0, len(pt))
	b.SetBytes(int64(len(pt)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		sealed, err = r.client.Seal(sealed[:0], pt)
		if err != nil {
			b.Fatal(err)
		}
		opened, err = r.server.Open(opened[:0], sealed)
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHandshake(b *testing.B) {
	client, server := newKeypair(b), newKeypair(b)
	b.ReportAllocs()
	for b.Loop() {
		doHandshake(b, client, server)
	}
}

func BenchmarkDatagramSealOpen1400(b *testing.B) {
	r := doHandshake(b, newKeypair(b), newKeypair(b))
	send, _, err := r.client.DatagramCiphers()
	if err != nil {
		b.Fatal(err)
	}
	_, recv, err := r.server.DatagramCiphers()
	if err != nil {
		b.Fatal(err)
	}
	var window handshake.ReplayWindow
	pt := make([]byte, 1400)
	sealed := make([]byte, 0, len(pt)+handshake.Overhead)
	opened := make([]byte, 0, len(pt))
	b.SetBytes(int64(len(pt)))
	b.ReportAllocs()
	var counter uint64
	for b.Loop() {
		sealed = send.Seal(sealed[:0], counter, pt)
		opened, err = recv.Open(opened[:0], counter, sealed)
		if err != nil || !window.Accept(counter) {
			b.Fatal(err)
		}
		counter++
	}
}

func BenchmarkReplayWindowAccept(b *testing.B) {
	var w handshake.ReplayWindow
	b.ReportAllocs()
	var n uint64
	for b.Loop() {
		w.Accept(n ^ 7) // slightly out of order
		n++
	}
}
