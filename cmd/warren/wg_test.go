package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warrenvpn/warren"
	"github.com/warrenvpn/warren/wgconfig"
)

// TestWGServerConf runs warren wg server-conf against a hub started by
// warren hub, with clients created and disabled over the admin socket.
func TestWGServerConf(t *testing.T) {
	dir := hubDir(t)
	cfgPath := writeHubConfig(t, dir, nil)
	_, sock := startHub(t, dir, "--config", cfgPath)
	mustWarren(t, "client", "create", "on", "--admin-socket", sock, "--out", filepath.Join(dir, "on.json"))
	mustWarren(t, "client", "create", "off", "--admin-socket", sock, "--out", filepath.Join(dir, "off.json"))
	mustWarren(t, "client", "disable", "off", "--admin-socket", sock)
	on, err := warren.LoadClientConfig(filepath.Join(dir, "on.json"))
	if err != nil {
		t.Fatal(err)
	}
	off, err := warren.LoadClientConfig(filepath.Join(dir, "off.json"))
	if err != nil {
		t.Fatal(err)
	}
	hubCfg, err := warren.LoadServerConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}

	check := func(text string, nat bool) {
		t.Helper()
		conf, err := wgconfig.Parse([]byte(text))
		if err != nil {
			t.Fatalf("%v\n%s", err, text)
		}
		if conf.Interface.PrivateKey != wgconfig.Key(hubCfg.WGPrivateKey) || conf.Interface.ListenPort == 0 {
			t.Fatalf("interface is not the hub's:\n%s", text)
		}
		if len(conf.Peers) != 1 || conf.Peers[0].PublicKey != wgconfig.Key(on.WGPrivateKey.PublicKey()) ||
			conf.Peers[0].AllowedIPs[0].String() != "10.99.0.2/32" {
			t.Fatalf("want client on as the only peer:\n%s", text)
		}
		if strings.Contains(text, off.WGPrivateKey.PublicKey().String()) {
			t.Fatalf("disabled client in the .conf:\n%s", text)
		}
		if got := len(conf.Interface.PostUp) == 3 && strings.Contains(text, "-o eth0 -j MASQUERADE"); got != nat {
			t.Fatalf("NAT lines present = %v, want %v:\n%s", got, nat, text)
		}
	}
	check(mustWarren(t, "wg", "server-conf", "--admin-socket", sock), false)
	check(mustWarren(t, "wg", "server-conf", "--nat", "--uplink", "eth0", "--admin-socket", sock), true)

	out := filepath.Join(dir, "wg0.conf")
	mustWarren(t, "wg", "server-conf", "--admin-socket", sock, "--out", out)
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("--out file: %v, mode %v; want 0600", err, fi.Mode())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	check(string(b), false)

	for _, args := range [][]string{
		{"wg", "server-conf", "--nat"},
		{"wg", "server-conf", "--uplink", "eth0"},
		{"wg", "nope"},
		{"wg"},
	} {
		if _, errOut, code := runWarren(t, "", append(args, "--admin-socket", sock)...); code != 2 || strings.Count(errOut, "\n") < 1 {
			t.Errorf("warren %s: exit %d, want 2\n%s", strings.Join(args, " "), code, errOut)
		}
	}
	if _, errOut, code := runWarren(t, "", "wg", "server-conf", "--nat", "--uplink", "eth0;x", "--admin-socket", sock); code != 1 || !strings.Contains(errOut, "invalid_config") || !strings.Contains(errOut, "uplink") {
		t.Errorf("bad uplink: exit %d\n%s", code, errOut)
	}
}
