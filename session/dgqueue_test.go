package session

import (
	"context"
	"testing"

	"github.com/warrenvpn/warren/codec"
)

// TestDatagramQueueTakesABatchWithOneWake: push queues a whole batch of
// received datagrams at once, in order, and wakes the handler's side only
// when the queue was empty; past datagramQueue it drops and says how many.
func TestDatagramQueueTakesABatchWithOneWake(t *testing.T) {
	q := &dgQueue{kick: make(chan struct{}, 1)}
	dgram := func(i int) []byte { return []byte{byte(i), byte(i >> 8)} }
	batch := func(from, n int) [][]byte {
		var bs [][]byte
		for i := range n {
			bs = append(bs, dgram(from+i))
		}
		return bs
	}
	if full := q.push(batch(0, 100)); full != 0 {
		t.Fatalf("push of 100 into an empty queue dropped %d", full)
	}
	if len(q.kick) != 1 {
		t.Fatal("push into an empty queue did not wake the handler's side")
	}
	<-q.kick
	q.push(batch(100, 10))
	if len(q.kick) != 0 {
		t.Fatal("push into a queue the handler has yet to empty woke it again")
	}
	next := 0
	for _, want := range []int{BatchSize, 110 - BatchSize, 0} {
		raw, closed := q.take(nil)
		if len(raw) != want || closed {
			t.Fatalf("take = %d datagrams, closed %v; want %d, false", len(raw), closed, want)
		}
		for _, b := range raw {
			if int(b[0])|int(b[1])<<8 != next {
				t.Fatalf("datagram %d out of order", int(b[0])|int(b[1])<<8)
			}
			next++
		}
	}

	q.push(batch(0, datagramQueue-5))
	if full := q.push(batch(datagramQueue-5, 15)); full != 10 {
		t.Fatalf("push of 15 with room for 5 dropped %d, want 10", full)
	}
	var all [][]byte
	for {
		raw, _ := q.take(nil)
		if len(raw) == 0 {
			break
		}
		all = append(all, raw...)
	}
	if len(all) != datagramQueue || int(all[len(all)-1][0])|int(all[len(all)-1][1])<<8 != datagramQueue-1 {
		t.Fatalf("queue held %d datagrams, the last %v; want %d ending with the last that fit", len(all), all[len(all)-1], datagramQueue)
	}
}

// batchDgram is a ringDgram that is a transport.DatagramBatchReceiver, as
// the QUIC transport is: it hands over what has arrived, a batch at a time.
type batchDgram struct {
	*ringDgram
	calls, most int // owned by the session's receiving goroutine
}

func (r *batchDgram) ReceiveDatagrams(ctx context.Context, bufs [][]byte) ([][]byte, error) {
	limit := cap(bufs)
	b, err := r.ReceiveDatagram(ctx)
	if err != nil {
		return bufs, err
	}
	bufs = append(bufs, b)
	for len(bufs) < limit {
		select {
		case b := <-r.dgIn:
			bufs = append(bufs, b)
			continue
		default:
		}
		break
	}
	r.calls++
	r.most = max(r.most, len(bufs))
	return bufs, nil
}

// TestSteadyStateBatchedDatagramsAllocateNothing is
// TestSteadyStateDatagramsAllocateNothing over a transport that hands
// datagrams over in batches: the session takes them a batch at a time and
// still allocates nothing per packet.
func TestSteadyStateBatchedDatagramsAllocateNothing(t *testing.T) {
	w := newWorld(t)
	dc, dh := newDatagramPipe(1400)
	cc, hc := newRingDgram(dc, 256), &batchDgram{ringDgram: newRingDgram(dh, 256)}
	sink := &counter{batches: make(chan int, 1024)}
	client, hub, _ := w.handshakeOver(t, cc, hc, sink)
	if client.err != nil || hub.err != nil {
		t.Fatal(client.err, hub.err)
	}
	client.s.Start(&counter{batches: make(chan int, 1024)})
	defer func() {
		client.s.Close(Reason{codec.DisconnectClosed, "over"})
		<-client.s.Done()
		<-hub.s.Done()
	}()
	batch := make([][]byte, 32)
	for i := range batch {
		batch[i] = packetBuf(1200, byte(i))
	}
	round := func() {
		if _, err := client.s.Write(batch, Headroom); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < len(batch); got += <-sink.batches {
		}
	}
	for range 10 {
		round()
	}
	if a := testing.AllocsPerRun(200, round); a != 0 && !raceEnabled {
		t.Fatalf("%v allocations per batch of %d datagrams, want 0", a, len(batch))
	}
	if m := client.s.MTUInfo(); m.OnStream != 0 || m.DatagramsSent < 210*uint64(len(batch)) {
		t.Fatalf("client MTUInfo %+v: want every packet sent as a datagram", m)
	}
	client.s.Close(Reason{codec.DisconnectClosed, "over"})
	<-hub.s.Done()
	t.Logf("%d ReceiveDatagrams calls, the largest batch %d", hc.calls, hc.most)
	if hc.calls == 0 {
		t.Fatal("the session never called ReceiveDatagrams")
	}
}
