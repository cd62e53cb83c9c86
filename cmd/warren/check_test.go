package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckResolvesKeyReferences(t *testing.T) {
	dir := hubDir(t)
	priv, _ := keypair(t)
	wgPriv, _ := keypair(t, "--wireguard")
	if err := os.WriteFile(filepath.Join(dir, "hub.wg"), []byte(wgPriv.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _ := json.Marshal(map[string]any{
		"listenAddr":   "127.0.0.1:0",
		"privateKey":   "${WARREN_HUB_KEY}",
		"wgPrivateKey": "file:hub.wg",
		"subnet":       "10.99.0.0/24",
	})
	path := filepath.Join(dir, "hub.json")
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	check := func(env ...string) (string, string, int) {
		cmd := exec.Command(warrenBin, "check", "--config", path)
		cmd.Env = append(os.Environ(), env...)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return o.String(), e.String(), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return o.String(), e.String(), 0
	}
	if out, errOut, code := check("WARREN_HUB_KEY=" + priv.String()); code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("check with the key in the environment: exit %d, %s%s", code, out, errOut)
	}
	t.Setenv("WARREN_HUB_KEY", "") // restored after the test
	os.Unsetenv("WARREN_HUB_KEY")
	_, errOut, code := check()
	if code != 1 || strings.Count(strings.TrimSpace(errOut), "\n") != 0 ||
		!strings.Contains(errOut, "privateKey") || !strings.Contains(errOut, "WARREN_HUB_KEY is not set") {
		t.Fatalf("check without the variable: exit %d, want 1 and one line naming privateKey and the variable:\n%s", code, errOut)
	}
	os.Remove(filepath.Join(dir, "hub.wg"))
	_, errOut, code = check("WARREN_HUB_KEY=" + priv.String())
	if code != 1 || !strings.Contains(errOut, "wgPrivateKey") || !strings.Contains(errOut, "hub.wg") || strings.Contains(errOut, priv.String()) {
		t.Fatalf("check without the key file: exit %d, want 1 and a line naming wgPrivateKey and the file:\n%s", code, errOut)
	}
}
