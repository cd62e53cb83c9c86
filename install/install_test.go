package install_test

import (
	"encoding/xml"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/warrenvpn/warren/install"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var update = flag.Bool("update", false, "rewrite the golden files")

var cases = []struct {
	name     string
	platform install.Platform
	opts     install.Options
}{
	{"hub.service", install.Systemd, install.Options{Mode: install.Hub}},
	{"client.service", install.Systemd, install.Options{Mode: install.Client}},
	{"client-tun.service", install.Systemd, install.Options{Mode: install.Client, TUN: true}},
	{"hub.plist", install.Launchd, install.Options{Mode: install.Hub}},
	{"client.plist", install.Launchd, install.Options{Mode: install.Client, Binary: "/opt/homebrew/bin/warren", Config: "/opt/homebrew/etc/warren/a&b.json"}},
}

func TestGenerateMatchesGolden(t *testing.T) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := install.Generate(tc.platform, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", tc.name)
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Fatalf("%s differs from %s (go test -update rewrites it):\n%s", tc.name, golden, got)
			}
		})
	}
}

func TestPlistIsWellFormedXML(t *testing.T) {
	for _, tc := range cases {
		if tc.platform != install.Launchd {
			continue
		}
		got, err := install.Generate(tc.platform, tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		d := xml.NewDecoder(strings.NewReader(got))
		d.Strict = true
		var strs []string
		inString := false
		for {
			tok, err := d.Token()
			if err != nil {
				if err.Error() == "EOF" {
					break
				}
				t.Fatalf("%s: %v", tc.name, err)
			}
			switch tok := tok.(type) {
			case xml.StartElement:
				inString = tok.Name.Local == "string"
			case xml.CharData:
				if inString {
					strs = append(strs, string(tok))
				}
			case xml.EndElement:
				inString = false
			}
		}
		if tc.opts.Config != "" && !contains(strs, tc.opts.Config) {
			t.Fatalf("%s: the config path %q does not survive escaping: %q", tc.name, tc.opts.Config, strs)
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestGenerateRefusesBadOptions(t *testing.T) {
	for _, o := range []install.Options{
		{Mode: "daemon"},
		{Mode: install.Hub, Config: "hub.json"},
		{Mode: install.Hub, Binary: "/usr/bin/war ren"},
		{Mode: install.Client, Config: "/etc/warren/%h.json"},
	} {
		if _, err := install.Generate(install.Systemd, o); err == nil {
			t.Errorf("Generate(%+v) succeeded", o)
		}
	}
	if _, err := install.Generate(install.Launchd, install.Options{Mode: install.Client, TUN: true}); err == nil {
		t.Error("launchd with TUN succeeded; it is not built")
	}
}

// TestSystemdAnalyzeVerify runs systemd-analyze verify on each unit, with
// the binary and config it names made to exist in a temporary root.
func TestSystemdAnalyzeVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed: skipping unit verification")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "warren")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		if tc.platform != install.Systemd {
			continue
		}
		o := tc.opts
		o.Binary = bin
		o.Config = filepath.Join(dir, string(o.Mode)+".json")
		unit, err := install.Generate(install.Systemd, o)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, install.UnitName(o.Mode))
		if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(sa, "verify", "--man=no", path).CombinedOutput()
		if err != nil {
			if strings.Contains(string(out), "Failed to initialize") || strings.Contains(string(out), "System has not been booted with systemd") {
				t.Skipf("systemd-analyze cannot run here: %s", out)
			}
			t.Fatalf("%s: systemd-analyze verify: %v\n%s", tc.name, err, out)
		}
		if len(strings.TrimSpace(string(out))) > 0 {
			t.Fatalf("%s: systemd-analyze verify warns:\n%s", tc.name, out)
		}
	}
}

func TestPaths(t *testing.T) {
	if got := install.Path(install.Systemd, install.Hub); got != "/etc/systemd/system/warren-hub.service" {
		t.Errorf("systemd path %s", got)
	}
	if got := install.Path(install.Launchd, install.Client); got != "/Library/LaunchDaemons/com.warrenvpn.warren.client.plist" {
		t.Errorf("launchd path %s", got)
	}
	if install.PlatformFor("darwin") != install.Launchd || install.PlatformFor("linux") != install.Systemd {
		t.Error("PlatformFor")
	}
}
