package main

import (
	"encoding/json"
	"image"
	"image/color"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	qr "github.com/piglig/go-qr"

	"github.com/warrenvpn/warren"
)

// terminalQRImage turns writeQR's output back into a picture: each
// character is two modules, one above the other, drawn scale pixels wide.
func terminalQRImage(t *testing.T, out string, scale int) image.Image {
	t.Helper()
	var rows [][]bool // true: light
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		body, ok := strings.CutPrefix(line, "\x1b[97;40m")
		if !ok {
			t.Fatalf("QR line %q does not set its colours", line)
		}
		body, ok = strings.CutSuffix(body, "\x1b[0m")
		if !ok {
			t.Fatalf("QR line %q does not reset its colours", line)
		}
		var top, bottom []bool
		for _, r := range body {
			switch r {
			case '█':
				top, bottom = append(top, true), append(bottom, true)
			case '▀':
				top, bottom = append(top, true), append(bottom, false)
			case '▄':
				top, bottom = append(top, false), append(bottom, true)
			case ' ':
				top, bottom = append(top, false), append(bottom, false)
			default:
				t.Fatalf("QR line has %q", r)
			}
		}
		rows = append(rows, top, bottom)
	}
	img := image.NewGray(image.Rect(0, 0, len(rows[0])*scale, len(rows)*scale))
	for y, row := range rows {
		if len(row) != len(rows[0]) {
			t.Fatalf("QR row %d is %d modules wide, row 0 %d", y, len(row), len(rows[0]))
		}
		for x, light := range row {
			c := color.Gray{Y: 0}
			if light {
				c.Y = 255
			}
			for dy := range scale {
				for dx := range scale {
					img.SetGray(x*scale+dx, y*scale+dy, c)
				}
			}
		}
	}
	return img
}

func TestClientCreateQRIsTheWireGuardConf(t *testing.T) {
	dir := hubDir(t)
	hub, sock := startHub(t, dir, "--config", writeHubConfig(t, dir, nil))
	confFile := filepath.Join(dir, "phone.conf")
	out := mustWarren(t, "client", "create", "phone", "--qr", "--wireguard-out", confFile, "--admin-socket", sock)
	conf, err := os.ReadFile(confFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(conf), "[Interface]") || !strings.Contains(string(conf), "PrivateKey") {
		t.Fatalf("the bundle's .conf:\n%s", conf)
	}
	got, err := qr.Decode(terminalQRImage(t, out, 4))
	if err != nil {
		t.Fatalf("decoding the printed QR code: %v\n%s", err, out)
	}
	if got != string(conf) {
		t.Fatalf("the QR code holds\n%s\nwant the .conf\n%s", got, conf)
	}
	if strings.Contains(out, "{") {
		t.Fatalf("--qr printed the JSON config too:\n%s", out)
	}

	// rotate prints the new .conf the same way.
	out = mustWarren(t, "client", "rotate", "phone", "--qr", "--admin-socket", sock)
	got, err = qr.Decode(terminalQRImage(t, out, 4))
	if err != nil || got == string(conf) || !strings.Contains(got, "[Peer]") {
		t.Fatalf("rotate --qr: %v\n%s", err, got)
	}

	if _, errOut, code := runWarren(t, "", "client", "create", "tablet", "--qr", "--json", "--admin-socket", sock); code != 2 {
		t.Fatalf("--qr with --json: exit %d, want 2\n%s", code, errOut)
	}
	hub.cmd.Process.Signal(syscall.SIGTERM)
	if code := hub.wait(t, time.Minute); code != 0 {
		t.Fatalf("hub exit %d\n%s", code, hub.stderr)
	}
}

func TestClientCreateQRWithoutWireGuardKeepsTheConfig(t *testing.T) {
	dir := hubDir(t)
	path := writeHubConfig(t, dir, nil)
	b, _ := os.ReadFile(path)
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	delete(cfg, "wgPrivateKey")
	b, _ = json.Marshal(cfg)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	hub, sock := startHub(t, dir, "--config", path)
	out, errOut, code := runWarren(t, "", "client", "create", "phone", "--qr", "--admin-socket", sock)
	var created warren.ClientConfig
	if code != 1 || !strings.Contains(errOut, "does not run WireGuard") || json.Unmarshal([]byte(out), &created) != nil || created.PrivateKey.IsZero() {
		t.Fatalf("create --qr on a hub without WireGuard: exit %d, want 1, the reason and the config with its keys\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	hub.cmd.Process.Signal(syscall.SIGTERM)
	if code := hub.wait(t, time.Minute); code != 0 {
		t.Fatalf("hub exit %d\n%s", code, hub.stderr)
	}
}
