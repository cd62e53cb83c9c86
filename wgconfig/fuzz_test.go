package wgconfig_test

import (
	"reflect"
	"testing"

	"github.com/warrenvpn/warren/wgconfig"
)

// FuzzParse checks that Parse never panics and that whatever it accepts,
// MarshalText writes and Parse reads back unchanged.
func FuzzParse(f *testing.F) {
	for _, c := range roundTripConfigs(f) {
		text, err := c.MarshalText()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(text)
	}
	priv, pub := testKey(1).String(), testKey(2).String()
	for _, s := range []string{
		"",
		"[Interface]",
		"[interface]\nprivatekey=" + priv + "\n",
		"# c\n[Interface] # c\r\nPrivateKey = " + priv + "\r\nAddress = 10.0.0.1, fd00::1/64\r\nDNS = 1.1.1.1 lan\r\n",
		"[Interface]\nPrivateKey = " + priv + "\nFwMark = 0x10\nTable = 1234\nSaveConfig = TRUE\nPreUp = a\nPreUp = b\n",
		"[Interface]\nPrivateKey = " + priv + "\n[Peer]\nPublicKey = " + pub + "\nEndpoint = [fe80::1%eth0]:1\nAllowedIPs = ::ffff:1.2.3.4\n",
		"[Interface]\nPrivateKey = " + priv + "\n[Peer]\nPublicKey = " + pub + "\nPersistentKeepalive = off\nAllowedIPs =\n",
		"[Interface]\nPrivateKey = " + priv + "\n[Peer]\nPublicKey = " + pub + "\nEndpoint = vpn.example.com\n",
		"[Peer]\nPublicKey = " + pub,
		"x = y\n[Interface\n=\n[",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := wgconfig.Parse(data)
		if err != nil {
			return
		}
		text, err := cfg.MarshalText()
		if err != nil {
			t.Fatalf("Parse accepted a config MarshalText rejects: %v\ninput: %q", err, data)
		}
		again, err := wgconfig.Parse(text)
		if err != nil {
			t.Fatalf("Parse(MarshalText(cfg)): %v\ninput: %q\ntext: %q", err, data, text)
		}
		if !reflect.DeepEqual(again, cfg) {
			t.Fatalf("Parse(MarshalText(cfg)) != cfg\ncfg:   %+v\nagain: %+v\ntext: %q", cfg, again, text)
		}
		if _, err := cfg.StripForWG(); err != nil {
			t.Fatalf("StripForWG: %v", err)
		}
	})
}
