package codec_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/warrenvpn/warren/codec"
)

func TestDisconnectPayloadRoundTrip(t *testing.T) {
	long := strings.Repeat("é", codec.MaxDisconnectReason) // two bytes each
	for _, tc := range []struct {
		code   codec.DisconnectCode
		reason string
		want   string
	}{
		{codec.DisconnectUnspecified, "", ""},
		{codec.DisconnectKicked, "client disabled for maintenance", "client disabled for maintenance"},
		{codec.DisconnectKeyRotated, "client key rotated", "client key rotated"},
		{codec.DisconnectClosed, "ünïcödé", "ünïcödé"},
		{codec.DisconnectCode(200), "from a newer peer", "from a newer peer"},
		// Cut to the limit on a character boundary, never inside one.
		{codec.DisconnectShuttingDown, long, long[:codec.MaxDisconnectReason-1]},
	} {
		p := codec.AppendDisconnect([]byte("x"), tc.code, tc.reason)
		if p[0] != 'x' {
			t.Fatalf("AppendDisconnect overwrote dst: %q", p)
		}
		code, reason, err := codec.ParseDisconnect(p[1:])
		if err != nil || code != tc.code || string(reason) != tc.want {
			t.Errorf("round trip of %v %.20q: %v %.20q %v", tc.code, tc.reason, code, reason, err)
		}
		if !utf8.Valid(reason) || len(reason) > codec.MaxDisconnectReason {
			t.Errorf("reason of %d bytes, valid UTF-8 %v", len(reason), utf8.Valid(reason))
		}
	}
}

func TestParseDisconnectMalformed(t *testing.T) {
	for _, p := range [][]byte{nil, {}} {
		code, reason, err := codec.ParseDisconnect(p)
		if !errors.Is(err, codec.ErrTruncated) || code != codec.DisconnectUnspecified || reason != nil {
			t.Errorf("ParseDisconnect(%v) = %v, %q, %v; want unspecified and ErrTruncated", p, code, reason, err)
		}
	}
	// A code alone is a valid payload with an empty reason.
	code, reason, err := codec.ParseDisconnect([]byte{byte(codec.DisconnectDisabled)})
	if err != nil || code != codec.DisconnectDisabled || len(reason) != 0 {
		t.Errorf("code only: %v %q %v", code, reason, err)
	}
	// Bytes that are not UTF-8 pass through for the caller to sanitise.
	code, reason, err = codec.ParseDisconnect([]byte{byte(codec.DisconnectRemoved), 0xff, 0x00})
	if err != nil || code != codec.DisconnectRemoved || !bytes.Equal(reason, []byte{0xff, 0x00}) {
		t.Errorf("raw bytes: %v %q %v", code, reason, err)
	}
}

func TestDisconnectCodeStringAndKnown(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 256; i++ {
		c := codec.DisconnectCode(i)
		s := c.String()
		if c.Known() {
			if strings.HasPrefix(s, "DisconnectCode(") || seen[s] {
				t.Errorf("known code %d has name %q", i, s)
			}
			seen[s] = true
		} else if s != fmt.Sprintf("DisconnectCode(%d)", i) {
			t.Errorf("unknown code %d has name %q", i, s)
		}
	}
	if len(seen) != int(codec.DisconnectClosed)+1 {
		t.Errorf("%d known codes", len(seen))
	}
}

// FuzzParseDisconnect: any payload parses without panicking, and a parsed
// payload re-encodes to the same bytes when its reason fits.
func FuzzParseDisconnect(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{2, 'k', 'i', 'c', 'k'})
	f.Add([]byte{0xff})
	f.Fuzz(func(t *testing.T, p []byte) {
		code, reason, err := codec.ParseDisconnect(p)
		if err != nil {
			if len(p) != 0 {
				t.Fatalf("ParseDisconnect(%x): %v", p, err)
			}
			return
		}
		if len(reason) <= codec.MaxDisconnectReason {
			if re := codec.AppendDisconnect(nil, code, string(reason)); !bytes.Equal(re, p) {
				t.Fatalf("re-encoded %x, read from %x", re, p)
			}
		}
	})
}
