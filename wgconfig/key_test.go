package wgconfig_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/warrenvpn/warren/wgconfig"
)

func TestKeyTextRoundTrips(t *testing.T) {
	k := testKey(1)
	s := k.String()
	if len(s) != 44 || !strings.HasSuffix(s, "=") {
		t.Fatalf("String() = %q, want 44 base64 characters ending in '='", s)
	}
	got, err := wgconfig.ParseKey(s)
	if err != nil || got != k {
		t.Fatalf("ParseKey(%q) = %v, %v; want %v", s, got, err, k)
	}
	text, err := k.MarshalText()
	if err != nil || string(text) != s {
		t.Fatalf("MarshalText() = %q, %v; want %q", text, err, s)
	}
	var u wgconfig.Key
	if err := u.UnmarshalText(text); err != nil || u != k {
		t.Fatalf("UnmarshalText(%q) = %v, key %v", text, err, u)
	}
}

func TestZeroKeyMarshalsEmpty(t *testing.T) {
	text, err := wgconfig.Key{}.MarshalText()
	if err != nil || len(text) != 0 {
		t.Fatalf("zero MarshalText() = %q, %v; want empty", text, err)
	}
	k := testKey(3)
	if err := k.UnmarshalText(nil); err != nil || !k.IsZero() {
		t.Fatalf("UnmarshalText(empty) = %v, key %v; want zero key", err, k)
	}
}

func TestParseKeyRejectsBadText(t *testing.T) {
	k := testKey(9)
	good := k.String()
	for name, s := range map[string]string{
		"empty":          "",
		"not base64":     strings.Repeat("!", 44),
		"short":          good[:43],
		"31 bytes":       base64.StdEncoding.EncodeToString(make([]byte, 31)),
		"33 bytes":       base64.StdEncoding.EncodeToString(make([]byte, 33)),
		"unpadded":       base64.RawStdEncoding.EncodeToString(k[:]),
		"url alphabet":   strings.NewReplacer("+", "-", "/", "_").Replace(base64.StdEncoding.EncodeToString([]byte(strings.Repeat("\xfb\xff", 16)))),
		"non-zero pad":   good[:42] + "B=",
		"embedded CR LF": good[:20] + "\r\n" + good[20:],
	} {
		if _, err := wgconfig.ParseKey(s); !errors.Is(err, wgconfig.ErrInvalidKey) {
			t.Errorf("%s: ParseKey(%q) error = %v, want ErrInvalidKey", name, s, err)
		}
	}
}
