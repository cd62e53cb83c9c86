package codec

import (
	"errors"
	"fmt"
	"io"
)

// readChunk bounds how much the Decoder asks its reader for at once, and so
// how far its buffer can grow ahead of the bytes that have actually arrived.
const readChunk = 4096

// A Decoder reads frames from a byte stream such as a QUIC stream. It reuses
// one payload buffer, which grows only as payload bytes arrive, so a header
// that claims [MaxPayload] bytes and is followed by nothing costs one small
// chunk, not 64 KiB.
//
// A Decoder is not safe for concurrent use. After Next returns an error, every
// later call returns the same error: the stream cannot be resynchronised.
type Decoder struct {
	r   io.Reader
	hdr [HeaderLen]byte
	buf []byte
	err error
}

// NewDecoder returns a Decoder that reads frames from r. It does no buffering
// of its own beyond the frame being read, so several Decoders must not share r.
func NewDecoder(r io.Reader) *Decoder {
	return &Decoder{r: r}
}

// Next reads the next frame and returns its type and payload. The payload is
// valid until the next call to Next.
//
// At a clean end of the stream, between frames, Next returns io.EOF itself.
// If the stream ends inside a frame, the error wraps both [ErrTruncated] and
// io.ErrUnexpectedEOF. A frame with an unknown type or a length above
// [MaxPayload] yields an error wrapping [ErrUnknownType] or [ErrTooLong];
// other read errors are wrapped as they come.
func (d *Decoder) Next() (Type, []byte, error) {
	if d.err != nil {
		return 0, nil, d.err
	}
	t, p, err := d.next()
	if err != nil {
		d.err = err
		return 0, nil, err
	}
	return t, p, nil
}

func (d *Decoder) next() (Type, []byte, error) {
	k, err := io.ReadFull(d.r, d.hdr[:])
	switch {
	case err == io.EOF:
		return 0, nil, io.EOF
	case err == io.ErrUnexpectedEOF:
		return 0, nil, fmt.Errorf("%w: %d of %d header bytes: %w", ErrTruncated, k, HeaderLen, io.ErrUnexpectedEOF)
	case err != nil:
		return 0, nil, fmt.Errorf("codec: read frame header: %w", err)
	}
	t, n, err := parseHeader(d.hdr[:])
	if err != nil {
		return 0, nil, err
	}
	if err := d.readPayload(int(n)); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, fmt.Errorf("%w: %v payload has %d of %d bytes: %w", ErrTruncated, t, len(d.buf), n, io.ErrUnexpectedEOF)
		}
		return 0, nil, fmt.Errorf("codec: read %v payload: %w", t, err)
	}
	return t, d.buf, nil
}

// readPayload reads n bytes into d.buf in chunks of at most readChunk bytes,
// growing the buffer only when the next chunk does not fit.
func (d *Decoder) readPayload(n int) error {
	d.buf = d.buf[:0]
	for len(d.buf) < n {
		k := min(n-len(d.buf), readChunk)
		if cap(d.buf)-len(d.buf) < k {
			d.grow(k)
		}
		m, err := io.ReadFull(d.r, d.buf[len(d.buf):len(d.buf)+k])
		d.buf = d.buf[:len(d.buf)+m]
		if err != nil {
			return err
		}
	}
	return nil
}

// grow makes room for k more bytes, at least doubling the capacity so a
// stream of large frames settles on one buffer.
func (d *Decoder) grow(k int) {
	c := max(2*cap(d.buf), len(d.buf)+k, readChunk)
	c = min(c, MaxPayload) // len(d.buf)+k never exceeds MaxPayload
	nb := make([]byte, len(d.buf), c)
	copy(nb, d.buf)
	d.buf = nb
}
