package warren

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"go4.org/netipx"
)

func TestACLParseEntryAcceptsEverySyntax(t *testing.T) {
	tests := []struct {
		in       string
		from, to string
	}{
		{"10.0.0.7", "10.0.0.7", "10.0.0.7"},
		{"  10.0.0.7\t", "10.0.0.7", "10.0.0.7"},
		{"2001:db8::1", "2001:db8::1", "2001:db8::1"},
		{"::ffff:10.0.0.7", "10.0.0.7", "10.0.0.7"},
		{"10.0.0.0/8", "10.0.0.0", "10.255.255.255"},
		{"10.1.2.3/16", "10.1.0.0", "10.1.255.255"},
		{"0.0.0.0/0", "0.0.0.0", "255.255.255.255"},
		{"192.168.1.5/32", "192.168.1.5", "192.168.1.5"},
		{"2001:db8::/32", "2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"},
		{"2001:db8::1/128", "2001:db8::1", "2001:db8::1"},
		{"::ffff:10.0.0.0/104", "10.0.0.0", "10.255.255.255"},
		{"192.168.1.*", "192.168.1.0", "192.168.1.255"},
		{"10.*.*.*", "10.0.0.0", "10.255.255.255"},
		{"172.16.*.*", "172.16.0.0", "172.16.255.255"},
		{"*.*.*.*", "0.0.0.0", "255.255.255.255"},
		{"1.1.1.1-1.1.1.100", "1.1.1.1", "1.1.1.100"},
		{"1.1.1.1 - 1.1.1.100", "1.1.1.1", "1.1.1.100"},
		{"1.1.1.1-1.1.1.1", "1.1.1.1", "1.1.1.1"},
		{"2001:db8::1-2001:db8::ff", "2001:db8::1", "2001:db8::ff"},
		{"::ffff:1.1.1.1-1.1.1.9", "1.1.1.1", "1.1.1.9"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := parseACLEntry(tt.in)
			if err != nil {
				t.Fatalf("parseACLEntry(%q): %v", tt.in, err)
			}
			want := netipx.IPRangeFrom(netip.MustParseAddr(tt.from), netip.MustParseAddr(tt.to))
			if r != want {
				t.Errorf("parseACLEntry(%q) = %v, want %v", tt.in, r, want)
			}
		})
	}
}

func TestACLParseEntryRejectsBadEntries(t *testing.T) {
	tests := []struct {
		in, reason string
	}{
		{"", "empty"},
		{"   ", "empty"},
		{"10.0.0", "not an IP"},
		{"10.0.0.256", "not an IP"},
		{"010.0.0.1", "not an IP"},
		{"host.example", "not an IP"},
		{"fe80::1%eth0", "not an IP"},
		{"2001:db8::g", "not an IP"},
		{"10.0.0.0/33", "CIDR"},
		{"2001:db8::/129", "CIDR"},
		{"10.0.0.0/", "CIDR"},
		{"/8", "CIDR"},
		{"10.0.0.0/-1", "range"}, // the "-" makes it read as a range
		{"192.168.*.1", "trailing"},
		{"*.168.1.1", "trailing"},
		{"192.168.1.2*", "octet"},
		{"192.168.1.**", "octet"},
		{"192.168.*", "four octets"},
		{"192.168.1.1.*", "four octets"},
		{"2001:db8::*", "four octets"},
		{"192.168.01.*", "octet"},
		{"192.168.256.*", "octet"},
		{"192.168.+1.*", "octet"},
		{"1.1.1.100-1.1.1.1", "after its end"},
		{"2001:db8::ff-2001:db8::1", "after its end"},
		{"1.1.1.1-2001:db8::1", "mixes"},
		{"1.1.1.1-", "end"},
		{"-1.1.1.1", "start"},
		{"1.1.1.1-1.1.1.2-1.1.1.3", "end"},
		{"10.0.0.0/8-10.0.0.9", "start"},
		{"::/80", "IPv4-mapped"}, // found by FuzzParseACLEntry
		{"::ffff:0:0/95", "IPv4-mapped"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := parseACLEntry(tt.in)
			if err == nil {
				t.Fatalf("parseACLEntry(%q) = %v, want error", tt.in, r)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("parseACLEntry(%q) error %q does not mention %q", tt.in, err, tt.reason)
			}
			if !strings.HasPrefix(err.Error(), "warren: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestACLCompileErrorNamesListIndexEntryAndReason(t *testing.T) {
	tests := []struct {
		name         string
		allow, block []string
		field, value string
		reason       string
	}{
		{"allow", []string{"10.0.0.1", "10.0.0.0/8", "nope"}, nil, "a[2]", "nope", "not an IP"},
		{"block", []string{"10.0.0.1"}, []string{"1.1.1.9-1.1.1.1"}, "b[0]", "1.1.1.9-1.1.1.1", "after its end"},
		{"block-v6", nil, []string{"::1", "2001:db8::/200"}, "b[1]", "2001:db8::/200", "CIDR"},
		{"wildcard", []string{"10.*.0.*"}, nil, "a[0]", "10.*.0.*", "trailing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := compileACL("a", tt.allow, "b", tt.block)
			if err == nil {
				t.Fatalf("compileACL = %+v, want error", a)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %T %v is not a *ConfigError", err, err)
			}
			if ce.Field != tt.field || ce.Value != tt.value || !strings.Contains(ce.Reason, tt.reason) {
				t.Errorf("ConfigError = %+v, want field %q value %q reason containing %q", ce, tt.field, tt.value, tt.reason)
			}
			if strings.Contains(ce.Reason, "warren:") {
				t.Errorf("reason %q repeats the package prefix", ce.Reason)
			}
			msg := err.Error()
			for _, s := range []string{tt.field, tt.value, tt.reason} {
				if !strings.Contains(msg, s) {
					t.Errorf("error %q does not mention %q", msg, s)
				}
			}
		})
	}
}

func TestACLAllows(t *testing.T) {
	tests := []struct {
		name         string
		allow, block []string
		yes, no      []string
	}{
		{
			name: "empty allow allows all",
			yes:  []string{"10.0.0.1", "2001:db8::1", "::ffff:8.8.8.8", "0.0.0.0", "::"},
		},
		{
			name:  "empty allow with block",
			block: []string{"10.0.0.0/8", "2001:db8::/32"},
			yes:   []string{"11.0.0.1", "2001:db9::1"},
			no:    []string{"10.1.2.3", "::ffff:10.1.2.3", "2001:db8::5"},
		},
		{
			name:  "exact v4 and v6",
			allow: []string{"192.0.2.1", "2001:db8::1"},
			yes:   []string{"192.0.2.1", "::ffff:192.0.2.1", "2001:db8::1", "2001:db8::1%eth0"},
			no:    []string{"192.0.2.2", "2001:db8::2", "::192.0.2.1"},
		},
		{
			name:  "cidr",
			allow: []string{"10.0.0.0/8", "2001:db8::/48"},
			yes:   []string{"10.0.0.0", "10.255.255.255", "2001:db8:0:ffff::1"},
			no:    []string{"11.0.0.0", "9.255.255.255", "2001:db8:1::1"},
		},
		{
			name:  "wildcard",
			allow: []string{"192.168.1.*", "10.*.*.*"},
			yes:   []string{"192.168.1.0", "192.168.1.255", "10.9.9.9"},
			no:    []string{"192.168.2.1", "11.0.0.1"},
		},
		{
			name:  "range",
			allow: []string{"1.1.1.1-1.1.1.100", "2001:db8::10-2001:db8::20"},
			yes:   []string{"1.1.1.1", "1.1.1.50", "1.1.1.100", "2001:db8::10", "2001:db8::1f"},
			no:    []string{"1.1.1.0", "1.1.1.101", "2001:db8::f", "2001:db8::21"},
		},
		{
			name:  "deny overrides allow",
			allow: []string{"10.0.0.0/8", "2001:db8::/32"},
			block: []string{"10.0.0.5", "10.1.*.*", "2001:db8::5-2001:db8::9"},
			yes:   []string{"10.0.0.4", "10.0.0.6", "10.2.0.1", "2001:db8::4", "2001:db8::a"},
			no:    []string{"10.0.0.5", "10.1.200.1", "2001:db8::7", "8.8.8.8"},
		},
		{
			name:  "block everything",
			allow: []string{"10.0.0.1"},
			block: []string{"0.0.0.0/0", "::/0"},
			no:    []string{"10.0.0.1", "::1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := compileACL("allow", tt.allow, "block", tt.block)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tt.yes {
				if !a.allows(netip.MustParseAddr(s)) {
					t.Errorf("allows(%s) = false, want true", s)
				}
			}
			for _, s := range tt.no {
				if a.allows(netip.MustParseAddr(s)) {
					t.Errorf("allows(%s) = true, want false", s)
				}
			}
		})
	}
}

func TestACLNilAllowsAll(t *testing.T) {
	var a *acl
	for _, s := range []string{"10.0.0.1", "::1"} {
		if !a.allows(netip.MustParseAddr(s)) {
			t.Errorf("nil acl: allows(%s) = false", s)
		}
	}
	if !a.allows(netip.Addr{}) {
		t.Error("nil acl: allows(invalid) = false")
	}
	b, err := compileACL("a", []string{"10.0.0.0/8"}, "b", nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.allows(netip.Addr{}) {
		t.Error("allows(invalid) = true with a non-empty allow list")
	}
}

func TestACLCompileSecurity(t *testing.T) {
	cs, err := compileSecurity("security", nil)
	if err != nil || cs == nil {
		t.Fatalf("compileSecurity(nil) = %v, %v", cs, err)
	}
	if !cs.remote.allows(netip.MustParseAddr("1.2.3.4")) || !cs.dest.allows(netip.MustParseAddr("::1")) {
		t.Error("nil security does not allow all")
	}

	cs, err = compileSecurity("security", &ClientSecurity{
		IPAllowList:          []string{"203.0.113.0/24"},
		IPBlockList:          []string{"203.0.113.66"},
		DestinationAllowList: []string{"10.0.0.*"},
		DestinationBlockList: []string{"10.0.0.1"},
		MaxConnections:       3,
		RateLimit:            &RateLimit{BytesPerSec: 1 << 20, BurstBytes: 0},
	})
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		a    *acl
		ip   string
		want bool
	}{
		{cs.remote, "203.0.113.5", true},
		{cs.remote, "203.0.113.66", false},
		{cs.remote, "198.51.100.1", false},
		{cs.dest, "10.0.0.2", true},
		{cs.dest, "10.0.0.1", false},
		{cs.dest, "10.0.1.2", false},
	}
	for _, c := range checks {
		if got := c.a.allows(netip.MustParseAddr(c.ip)); got != c.want {
			t.Errorf("allows(%s) = %v, want %v", c.ip, got, c.want)
		}
	}
}

func TestACLCompileSecurityRejectsBadFields(t *testing.T) {
	tests := []struct {
		name  string
		field string
		s     ClientSecurity
		want  string
		value string
	}{
		{"ipAllowList", "security", ClientSecurity{IPAllowList: []string{"1.1.1.1", "x", "2.2.2.2"}}, "security.ipAllowList[1]", "x"},
		{"ipBlockList", "security", ClientSecurity{IPBlockList: []string{"1.1.1.*.*"}}, "security.ipBlockList[0]", "1.1.1.*.*"},
		{"destinationAllowList", "clients[3].security", ClientSecurity{DestinationAllowList: []string{"::1", "::1", "::2-::1"}}, "clients[3].security.destinationAllowList[2]", "::2-::1"},
		{"destinationBlockList", "", ClientSecurity{DestinationBlockList: []string{"10.0.0.0/40"}}, "destinationBlockList[0]", "10.0.0.0/40"},
		{"maxConnections", "security", ClientSecurity{MaxConnections: -1}, "security.maxConnections", "-1"},
		{"bytesPerSec zero", "security", ClientSecurity{RateLimit: &RateLimit{BytesPerSec: 0}}, "security.rateLimit.bytesPerSec", "0"},
		{"bytesPerSec negative", "security", ClientSecurity{RateLimit: &RateLimit{BytesPerSec: -5}}, "security.rateLimit.bytesPerSec", "-5"},
		{"burstBytes", "security", ClientSecurity{RateLimit: &RateLimit{BytesPerSec: 5, BurstBytes: -1}}, "security.rateLimit.burstBytes", "-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs, err := compileSecurity(tt.field, &tt.s)
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("compileSecurity = %v, %v; want *ConfigError", cs, err)
			}
			if ce.Field != tt.want || ce.Value != tt.value || ce.Reason == "" {
				t.Errorf("ConfigError = %+v, want field %q value %q", ce, tt.want, tt.value)
			}
		})
	}
}

func TestACLCompileBlockList(t *testing.T) {
	set, err := compileBlockList("connectionIpBlockList", nil)
	if err != nil || set == nil {
		t.Fatalf("compileBlockList(nil) = %v, %v; want an empty set", set, err)
	}
	if set.Contains(netip.MustParseAddr("1.2.3.4")) {
		t.Error("empty block list contains 1.2.3.4")
	}
	set, err = compileBlockList("connectionIpBlockList", []string{"198.51.100.*", "2001:db8::/32"})
	if err != nil {
		t.Fatal(err)
	}
	if !set.Contains(netip.MustParseAddr("::ffff:198.51.100.7").Unmap()) || !set.Contains(netip.MustParseAddr("2001:db8::9")) {
		t.Error("block list misses a listed address")
	}
	_, err = compileBlockList("connectionIpBlockList", []string{"1.2.3.4", " "})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "connectionIpBlockList[1]" {
		t.Errorf("compileBlockList with a blank entry: %v", err)
	}
}

func FuzzParseACLEntry(f *testing.F) {
	for _, s := range []string{
		"10.0.0.7", "2001:db8::1", "10.0.0.0/8", "2001:db8::/32", "192.168.1.*", "10.*.*.*",
		"1.1.1.1-1.1.1.100", "2001:db8::1-2001:db8::ff", "::ffff:1.2.3.4/120", " 1.2.3.4 ",
		"*", "-", "/", "1.1.1.1--1", "fe80::1%eth0-fe80::2", "*.*.*.*", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseACLEntry(s)
		if err != nil {
			if r != (netipx.IPRange{}) {
				t.Errorf("parseACLEntry(%q) returned %v with error %v", s, r, err)
			}
			return
		}
		if !r.IsValid() {
			t.Fatalf("parseACLEntry(%q) = invalid range %v", s, r)
		}
		if r.From().Zone() != "" || r.From().Is4In6() || r.To().Is4In6() {
			t.Errorf("parseACLEntry(%q) = %v: zoned or IPv4-mapped bound", s, r)
		}
		a, err := compileACL("a", []string{s}, "b", nil)
		if err != nil {
			t.Fatalf("parseACLEntry(%q) ok but compileACL failed: %v", s, err)
		}
		if !a.allows(r.From()) || !a.allows(r.To()) {
			t.Errorf("acl from %q does not allow its own bounds %v", s, r)
		}
	})
}

func BenchmarkACLAllows(b *testing.B) {
	allow := []string{"10.0.0.0/8", "192.168.1.*", "2001:db8::/32"}
	block := []string{"10.0.0.5", "10.1.0.0-10.1.255.255", "2001:db8::5"}
	for i := 0; i < 64; i++ {
		allow = append(allow, netip.AddrFrom4([4]byte{172, 16, byte(i), 1}).String())
	}
	a, err := compileACL("a", allow, "b", block)
	if err != nil {
		b.Fatal(err)
	}
	ips := []netip.Addr{
		netip.MustParseAddr("10.2.3.4"),
		netip.MustParseAddr("::ffff:192.168.1.9"),
		netip.MustParseAddr("2001:db8::77"),
		netip.MustParseAddr("8.8.8.8"),
	}
	if n := testing.AllocsPerRun(100, func() { a.allows(ips[1]) }); n != 0 {
		b.Fatalf("allows allocates %v times per call", n)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var n int
	for i := 0; b.Loop(); i++ {
		if a.allows(ips[i&3]) {
			n++
		}
	}
	_ = n
}

func TestACLAllowsDoesNotAllocate(t *testing.T) {
	a, err := compileACL("a", []string{"10.0.0.0/8", "2001:db8::/32"}, "b", []string{"10.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("::ffff:10.9.9.9")
	if n := testing.AllocsPerRun(1000, func() { a.allows(ip) }); n != 0 {
		t.Errorf("allows allocates %v times per call", n)
	}
}
