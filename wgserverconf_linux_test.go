//go:build linux

package warren

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warrenvpn/warren/wgconfig"
)

// TestWireGuardServerConfigLoadsIntoStockWG checks the server .conf with the
// real tools: wg-quick strip reads it (PostUp lines and all), and wg setconf
// loads the stripped text into a wireguard-go interface in a throwaway
// network namespace, whose wg showconf then has the hub's key and port and
// exactly the expected peers. It needs root and the Debian packages
// wireguard-go, wireguard-tools and iproute2.
func TestWireGuardServerConfigLoadsIntoStockWG(t *testing.T) {
	tools := interopRequire(t)
	wgQuick, err := exec.LookPath("wg-quick")
	if err != nil {
		t.Skip("wg-quick not on PATH; install with: apt-get install -y wireguard-tools")
	}
	s, want, absent := wgServerConfHub(t)
	text, err := s.WireGuardServerConfig(context.Background(), WGServerConfigOptions{NAT: true, Uplink: "eth9"})
	if err != nil {
		t.Fatal(err)
	}
	checkServerConf(t, s, text, want, absent)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pid := os.Getpid()
	ifname := fmt.Sprintf("wsc%d", pid) // at most 10 bytes
	dir := t.TempDir()
	confPath := filepath.Join(dir, ifname+".conf")
	if err := os.WriteFile(confPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	stripped := tools.must(t, ctx, wgQuick, "strip", confPath)
	for _, gone := range []string{"PostUp", "PostDown", "Address", "MTU"} {
		if strings.Contains(stripped, gone) {
			t.Fatalf("wg-quick strip left %s:\n%s", gone, stripped)
		}
	}
	strippedPath := filepath.Join(dir, "stripped.conf")
	if err := os.WriteFile(strippedPath, []byte(stripped), 0o600); err != nil {
		t.Fatal(err)
	}

	nsName := fmt.Sprintf("warren-wsc-%d", pid)
	if out, err := tools.run(ctx, tools.ip, "netns", "add", nsName); err != nil {
		if strings.Contains(out, "ermission denied") || strings.Contains(out, "not permitted") {
			t.Skipf("cannot create a network namespace here (%s); this test needs a root that may", strings.TrimSpace(out))
		}
		t.Fatalf("ip netns add %s: %v\n%s", nsName, err, out)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		if out, err := tools.run(cctx, tools.ip, "netns", "del", nsName); err != nil {
			t.Logf("cleanup: ip netns del %s: %v %s", nsName, err, out)
		}
	})
	ns := &interopNS{tools: tools, name: nsName}
	ns.startWireGuardGo(t, ifname)
	ns.must(t, ctx, tools.wg, "setconf", ifname, strippedPath)

	shown := ns.must(t, ctx, tools.wg, "showconf", ifname)
	got, err := wgconfig.Parse([]byte(shown))
	if err != nil {
		t.Fatalf("wg showconf does not parse: %v\n%s", err, shown)
	}
	if got.Interface.PrivateKey != wgconfig.Key(s.cfg.WGPrivateKey) {
		t.Fatalf("the interface's private key is not the hub's:\n%s", shown)
	}
	if port := s.WGAddr().String(); !strings.HasSuffix(port, fmt.Sprintf(":%d", got.Interface.ListenPort)) {
		t.Fatalf("ListenPort %d, hub's WireGuard address %s", got.Interface.ListenPort, port)
	}
	if len(got.Peers) != len(want) {
		t.Fatalf("wg showconf has %d peers, want %d:\n%s", len(got.Peers), len(want), shown)
	}
	for _, p := range got.Peers {
		w, ok := want[p.AllowedIPs[0].Addr()]
		if !ok || p.PublicKey != w.PublicKey || !slices.Equal(p.AllowedIPs, w.AllowedIPs) ||
			p.Endpoint != w.Endpoint || p.PersistentKeepalive != w.PersistentKeepalive {
			t.Fatalf("peer %+v, want %+v\n%s", p, w, shown)
		}
	}
}
