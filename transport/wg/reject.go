package wg

import (
	"net/netip"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"
)

// rejectBind is a conn.Bind whose receive functions drop datagrams from
// sources that reject refuses, before wireguard-go parses them: no cookie,
// no MAC check, no Diffie-Hellman, no roaming. It filters each batch in
// place by zeroing the sizes of rejected datagrams, which wireguard-go
// skips (conn.ReceiveFunc allows zero sizes), so it allocates nothing.
type rejectBind struct {
	conn.Bind
	reject   func(netip.Addr) bool
	rejected *atomic.Uint64
}

// Open opens the wrapped Bind and wraps each of its receive functions.
func (b *rejectBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.Bind.Open(port)
	if err != nil {
		return nil, 0, err
	}
	wrapped := make([]conn.ReceiveFunc, len(fns))
	for i, fn := range fns {
		wrapped[i] = b.filter(fn)
	}
	return wrapped, actual, nil
}

func (b *rejectBind) filter(fn conn.ReceiveFunc) conn.ReceiveFunc {
	return func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, err := fn(packets, sizes, eps)
		var dropped uint64
		for i := range n {
			if sizes[i] == 0 || eps[i] == nil {
				continue
			}
			if b.reject(eps[i].DstIP().Unmap()) {
				sizes[i] = 0
				dropped++
			}
		}
		if dropped != 0 {
			b.rejected.Add(dropped)
		}
		return n, err
	}
}
