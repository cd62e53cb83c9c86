package wgconfig_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/warrenvpn/warren/wgconfig"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden with the current output")

// checkGolden compares got with testdata/name.golden, or rewrites the file
// when the test runs with -update.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s:\n--- got ---\n%s--- want ---\n%s", name, path, got, want)
	}
}

func goldenClient(t testing.TB) wgconfig.Config {
	t.Helper()
	c, err := wgconfig.ClientConfig(wgconfig.ClientParams{
		PrivateKey:          testKey(1),
		Address:             prefixes("10.8.0.2/32", "fd00:8::2/128"),
		DNS:                 addrs("10.8.0.1", "fd00:8::1"),
		MTU:                 1420,
		ServerPublicKey:     testKey(2),
		PresharedKey:        ptr(testKey(3)),
		Endpoint:            "vpn.example.com:51820",
		AllowedIPs:          prefixes("0.0.0.0/0", "::/0"),
		PersistentKeepalive: 25,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func goldenServer(t testing.TB, nat string) wgconfig.Config {
	t.Helper()
	c, err := wgconfig.ServerConfig(wgconfig.ServerParams{
		PrivateKey: testKey(10),
		Address:    netipPrefix("10.8.0.1/24"),
		MTU:        1420,
		Peers: []wgconfig.Peer{
			{PublicKey: testKey(11), AllowedIPs: prefixes("10.8.0.2/32", "fd00:8::2/128")},
			{PublicKey: testKey(12), PresharedKey: ptr(testKey(13)), AllowedIPs: prefixes("10.8.0.3/32", "192.168.50.0/24")},
			{PublicKey: testKey(14), Endpoint: "[2001:db8::7]:51821", AllowedIPs: prefixes("10.8.0.4/32"), PersistentKeepalive: 25},
		},
		NATInterface: nat,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGoldenClientConfig(t *testing.T) {
	text, err := goldenClient(t).MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "client", text)
}

func TestGoldenServerConfig(t *testing.T) {
	text, err := goldenServer(t, "").MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "server", text)
}

func TestGoldenServerConfigWithNAT(t *testing.T) {
	c := goldenServer(t, "eth0")
	text, err := c.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "server_nat", text)

	stripped, err := c.StripForWG()
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "server_nat_strip", stripped)
}

func TestServerConfigNATUsesIP6TablesForIPv6(t *testing.T) {
	c, err := wgconfig.ServerConfig(wgconfig.ServerParams{
		PrivateKey:   testKey(10),
		Address:      netipPrefix("fd00:8::1/64"),
		NATInterface: "ens3",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "ip6tables -t nat -A POSTROUTING -s fd00:8::/64 -o ens3 -j MASQUERADE"
	if got := c.Interface.PostUp[2]; got != want {
		t.Errorf("PostUp[2] = %q, want %q", got, want)
	}
	if c.Interface.ListenPort != wgconfig.DefaultListenPort {
		t.Errorf("ListenPort = %d, want the default %d", c.Interface.ListenPort, wgconfig.DefaultListenPort)
	}
}
