package warren

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go4.org/netipx"
)

// FuzzLoadServerConfig writes arbitrary bytes as a config file and loads it.
// LoadServerConfig must not panic, must fail only with a *ConfigError, and
// what it accepts Save must write and LoadServerConfig read back the same.
func FuzzLoadServerConfig(f *testing.F) {
	const key = "YGfWpAXKqzzUMEbVn9rV+3Qbb9VI3VIr27tjZxXjemc="
	const pub = "yoKkfI5Qr3Zzw5aUlmbjC4MYRsWfhfHFMGm8MAlqGE4="
	for _, s := range []string{
		`{"listenAddr":"127.0.0.1:0","privateKey":"` + key + `","subnet":"10.8.0.0/24",` +
			`"destinationPolicy":{"default":"allow","blockList":["192.0.2.0/24"]},` +
			`"clients":[{"clientId":"alice","publicKey":"` + pub + `","assignedIp":"10.8.0.2","enabled":true,` +
			`"security":{"ipBlockList":["198.51.100.1"],"rateLimit":{"bytesPerSec":1000,"burstBytes":2000}}}]}`,
		`{"wgPrivateKey":"` + key + `","wgPeers":[{"publicKey":"` + pub + `","allowedIps":["10.8.0.9/32"],"persistentKeepalive":25}]}`,
		`{"privateKey":"${WARREN_FUZZ_UNSET}"}`,
		`{"privateKey":"file:nonexistent.key"}`,
		`{"clients":[{"clientId":"a","clientID":"b"}]}`,
		`{"clients":[{"security":{"ipBlockLst":[]}}]}`,
		`{"mtu":"1400"} {}`,
		`{"subnet":"10.8.0.0/33","proxyHeaderTimeoutMs":-1}`,
		``,
		`null`,
		`[`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "config.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadServerConfig(path)
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error is not a *ConfigError: %v", err)
			}
			return
		}
		saved := filepath.Join(dir, "saved.json")
		if err := cfg.Save(saved); err != nil {
			t.Fatalf("Save of a loaded config: %v", err)
		}
		again, err := LoadServerConfig(saved)
		if err != nil {
			t.Fatalf("a saved config does not load: %v\ninput: %q", err, data)
		}
		a, _ := json.Marshal(cfg)
		b, _ := json.Marshal(again)
		if string(a) != string(b) {
			t.Fatalf("Save/Load round trip changed the config:\n%s\n%s", a, b)
		}
	})
}

// FuzzCompileACL compiles an allow list and a block list, one entry per
// line. It must not panic; an error must be the *ConfigError naming the
// first entry parseACLEntry refuses; and the compiled ACL must refuse every
// bound of every blocked range and allow every bound of an allowed range
// that no blocked range covers.
func FuzzCompileACL(f *testing.F) {
	f.Add("10.0.0.0/8\n192.168.1.*", "10.0.0.5\n10.1.0.0-10.1.255.255")
	f.Add("", "2001:db8::/32")
	f.Add("2001:db8::/32\n::ffff:10.0.0.1", "")
	f.Add("10.0.0.1\n\n10.0.0.2", "x")
	f.Add("*", "1.1.1.1--1")
	f.Add("0.0.0.0/0\n::/0", "0.0.0.0/0\n::/0")
	f.Fuzz(func(t *testing.T, allowText, blockText string) {
		var allow, block []string
		if allowText != "" {
			allow = strings.Split(allowText, "\n")
		}
		if blockText != "" {
			block = strings.Split(blockText, "\n")
		}
		parse := func(list []string) (rs []netipx.IPRange, bad int) {
			for i, s := range list {
				r, err := parseACLEntry(s)
				if err != nil {
					return rs, i
				}
				rs = append(rs, r)
			}
			return rs, -1
		}
		allowR, allowBad := parse(allow)
		blockR, blockBad := parse(block)
		a, err := compileACL("allow", allow, "block", block)
		want := ""
		switch {
		case allowBad >= 0:
			want = fmt.Sprintf("allow[%d]", allowBad)
		case blockBad >= 0:
			want = fmt.Sprintf("block[%d]", blockBad)
		}
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != want {
				t.Fatalf("compileACL error %v (%T), want a *ConfigError on %q", err, err, want)
			}
			return
		}
		if want != "" {
			t.Fatalf("compileACL accepted a list with a bad entry at %s", want)
		}
		blocked := func(ip netip.Addr) bool {
			for _, r := range blockR {
				if r.Contains(ip) {
					return true
				}
			}
			return false
		}
		for _, r := range blockR {
			for _, ip := range []netip.Addr{r.From(), r.To()} {
				if a.allows(ip) {
					t.Fatalf("ACL allows %v, in blocked range %v", ip, r)
				}
			}
		}
		for _, r := range allowR {
			for _, ip := range []netip.Addr{r.From(), r.To()} {
				if a.allows(ip) != !blocked(ip) {
					t.Fatalf("ACL allows(%v) = %v, in allowed range %v, blocked %v", ip, a.allows(ip), r, blocked(ip))
				}
			}
		}
	})
}
