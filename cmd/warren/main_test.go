package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/warrenvpn/warren"
	"github.com/warrenvpn/warren/install"
)

// warrenBin is the command, built once by TestMain.
var warrenBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "warren-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	warrenBin = filepath.Join(dir, "warren")
	out, err := exec.Command("go", "build", "-race", "-o", warrenBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := 0
	func() {
		defer os.RemoveAll(dir)
		goleak.VerifyTestMain(exitCapture{&code, m})
	}()
	os.Exit(code)
}

// exitCapture lets TestMain clean up after goleak's run.
type exitCapture struct {
	code *int
	m    *testing.M
}

func (e exitCapture) Run() int { *e.code = e.m.Run(); return *e.code }

// syncBuffer is a bytes.Buffer safe for a process to write while a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// warren runs the command to completion and returns its output and exit status.
func runWarren(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, warrenBin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("warren %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), code
}

// mustWarren runs the command and fails the test unless it exits 0.
func mustWarren(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := runWarren(t, "", args...)
	if code != 0 {
		t.Fatalf("warren %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// keypair runs warren keygen and checks its output.
func keypair(t *testing.T, flags ...string) (priv, pub warren.Key) {
	t.Helper()
	out := mustWarren(t, append([]string{"keygen"}, flags...)...)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("keygen printed %d lines, want 2:\n%s", len(lines), out)
	}
	priv, err := warren.ParseKey(lines[0])
	if err != nil {
		t.Fatalf("private key %q: %v", lines[0], err)
	}
	pub, err = warren.ParseKey(lines[1])
	if err != nil {
		t.Fatalf("public key %q: %v", lines[1], err)
	}
	if priv.PublicKey() != pub {
		t.Fatal("keygen's public key is not the private key's")
	}
	return priv, pub
}

func TestKeygenPrintsParsableKeypair(t *testing.T) {
	priv, pub := keypair(t)
	wpriv, wpub := keypair(t, "--wireguard")
	if priv == wpriv || pub == wpub {
		t.Fatal("two keygens gave the same key")
	}
	out, errOut, code := runWarren(t, wpriv.String()+"\n", "pubkey")
	if code != 0 || strings.TrimSpace(out) != wpub.String() {
		t.Fatalf("pubkey: exit %d, %q %s; want %s", code, out, errOut, wpub)
	}
}

// hubDir is a short directory (Unix socket paths are limited to about
// 100 bytes) for a hub's files.
func hubDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "wh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// writeHubConfig writes a hub config with keys from warren keygen.
func writeHubConfig(t *testing.T, dir string, extra map[string]any) string {
	t.Helper()
	priv, _ := keypair(t)
	wgPriv, _ := keypair(t, "--wireguard")
	cfg := map[string]any{
		"listenAddr":   "127.0.0.1:0",
		"privateKey":   priv.String(),
		"wgPrivateKey": wgPriv.String(),
		"subnet":       "10.99.0.0/24",
	}
	for k, v := range extra {
		cfg[k] = v
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "hub.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// process is a warren command running in the background.
type process struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan struct{}
	err            error
}

func start(t *testing.T, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(warrenBin, args...), stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit status.
func (p *process) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("%s did not exit within %s\nstdout: %s\nstderr: %s", p.cmd.Args, d, p.stdout, p.stderr)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startHub runs warren hub and waits until its admin socket answers.
func startHub(t *testing.T, dir string, args ...string) (*process, string) {
	t.Helper()
	sock := filepath.Join(dir, "admin.sock")
	hub := start(t, append([]string{"hub", "--admin-socket", sock}, args...)...)
	eventually(t, "the hub's admin socket", time.Minute, func() bool {
		select {
		case <-hub.done:
			t.Fatalf("the hub exited: %v\n%s", hub.err, hub.stderr)
		default:
		}
		_, _, code := runWarren(t, "", "status", "--admin-socket", sock)
		return code == 0
	})
	return hub, sock
}

func TestHubServesAdminCommandsAndStopsCleanly(t *testing.T) {
	dir := hubDir(t)
	cfgPath := writeHubConfig(t, dir, nil)
	registry := filepath.Join(dir, "registry.json")
	hub, sock := startHub(t, dir, "--config", cfgPath, "--registry", registry, "--log-format", "json")

	fi, err := os.Lstat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket: %v, mode %v; want 0600", err, fi.Mode())
	}

	laptop := filepath.Join(dir, "laptop.json")
	mustWarren(t, "client", "create", "laptop", "--admin-socket", sock, "--description", "Ann's laptop", "--out", laptop)
	mustWarren(t, "client", "create", "--admin-socket", sock, "phone", "--tag", "mobile")
	if fi, err := os.Stat(laptop); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("client config file: %v, mode %v; want 0600", err, fi.Mode())
	}
	if _, errOut, code := runWarren(t, "", "client", "create", "laptop", "--admin-socket", sock); code != 1 || !strings.Contains(errOut, "client_exists") {
		t.Fatalf("creating laptop twice: exit %d, %s", code, errOut)
	}

	list := mustWarren(t, "client", "list", "--admin-socket", sock)
	if !strings.Contains(list, "laptop") || !strings.Contains(list, "10.99.0.2") || !strings.Contains(list, "phone") || !strings.Contains(list, "Ann's laptop") {
		t.Fatalf("client list:\n%s", list)
	}

	exported := mustWarren(t, "client", "export", "laptop", "--admin-socket", sock)
	var exp warren.ClientConfig
	if err := json.Unmarshal([]byte(exported), &exp); err != nil {
		t.Fatalf("export: %v\n%s", err, exported)
	}
	created, err := warren.LoadClientConfig(laptop)
	if err != nil {
		t.Fatal(err)
	}
	if exp.ServerPublicKey != created.ServerPublicKey || exp.ServerURL != created.ServerURL || !exp.PrivateKey.IsZero() || created.PrivateKey.IsZero() {
		t.Fatalf("exported config %+v does not match the created one %+v (without its secrets)", exp, created)
	}
	if conf := mustWarren(t, "client", "export", "laptop", "--format", "wireguard", "--admin-socket", sock); !strings.Contains(conf, "[Interface]") || !strings.Contains(conf, "[Peer]") {
		t.Fatalf("export --format wireguard:\n%s", conf)
	}

	// A client connects with the created config, shows up live, and is
	// dropped for good when disabled.
	conn := start(t, "connect", "--config", laptop)
	eventually(t, "warren connect to print its address", time.Minute, func() bool {
		select {
		case <-conn.done:
			t.Fatalf("warren connect exited: %v\n%s\n%s", conn.err, conn.stdout, conn.stderr)
		default:
		}
		return strings.Contains(conn.stdout.String(), "connected as 10.99.0.2/24 over websocket")
	})
	status := mustWarren(t, "status", "--admin-socket", sock)
	if !strings.Contains(status, "hub running") || !strings.Contains(status, "2 registered clients, 1 live sessions") || !strings.Contains(status, "laptop") {
		t.Fatalf("status:\n%s", status)
	}
	var stats warren.Statistics
	if err := json.Unmarshal([]byte(mustWarren(t, "stats", "--admin-socket", sock)), &stats); err != nil || stats.Handshakes < 1 {
		t.Fatalf("stats: %+v, %v", stats, err)
	}
	if _, errOut, code := runWarren(t, "", "client", "disable", "laptop", "--admin-socket", sock); code != 0 || errOut != "laptop: disabled\n" {
		t.Fatalf("client disable: exit %d, %q", code, errOut)
	}
	if code := conn.wait(t, time.Minute); code != 1 || !strings.Contains(conn.stderr.String(), "disabled") {
		t.Fatalf("warren connect after disable: exit %d, stderr:\n%s", code, conn.stderr)
	}

	// SIGHUP is answered in the log, and the hub keeps running.
	if err := hub.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the SIGHUP log line", 30*time.Second, func() bool {
		return strings.Contains(hub.stderr.String(), "reloading the config is not supported yet")
	})
	mustWarren(t, "client", "remove", "phone", "--admin-socket", sock)

	if err := hub.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := hub.wait(t, time.Minute); code != 0 {
		t.Fatalf("hub exit status %d after SIGTERM\n%s", code, hub.stderr)
	}
	for _, line := range strings.Split(strings.TrimSpace(hub.stderr.String()), "\n") {
		if !json.Valid([]byte(line)) {
			t.Fatalf("--log-format json wrote a line that is not JSON: %s", line)
		}
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("the admin socket outlived the hub: %v", err)
	}
	store, err := warren.NewFileStore(registry)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := store.Load(context.Background())
	if err != nil || len(entries) != 1 || entries[0].ClientID != "laptop" || entries[0].Enabled {
		t.Fatalf("registry after stop: %+v, %v; want laptop, disabled", entries, err)
	}
}

func TestHubStatusPageNeedsToken(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed: skipping the status page check")
	}
	dir := hubDir(t)
	cfgPath := writeHubConfig(t, dir, nil)
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	hub, _ := startHub(t, dir, "--config", cfgPath, "--admin-http", addr, "--admin-token-file", tokenFile)
	get := func(url string) int {
		c := exec.Command("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url)
		b, err := c.Output()
		if err != nil {
			t.Fatalf("curl %s: %v", url, err)
		}
		var status int
		fmt.Sscan(string(b), &status)
		return status
	}
	if s := get("http://" + addr + "/?token=0123456789abcdef0123"); s != 200 {
		t.Fatalf("status page with the token: HTTP %d", s)
	}
	if s := get("http://" + addr + "/status.json?token=wrong"); s != 401 {
		t.Fatalf("status page with a wrong token: HTTP %d", s)
	}
	hub.cmd.Process.Signal(syscall.SIGINT)
	if code := hub.wait(t, time.Minute); code != 0 {
		t.Fatalf("hub exit status %d after SIGINT\n%s", code, hub.stderr)
	}
}

func TestBadHubConfigExitsWithOneLine(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, tc := range []struct {
		name  string
		edit  func(cfg string) string
		wants []string
	}{
		{"unknown field", func(c string) string { return strings.Replace(c, `"listenAddr"`, `"listenAdr"`, 1) }, []string{"listenAdr", "listenAddr"}},
		{"bad key", func(c string) string {
			return strings.Replace(c, `"subnet"`, `"publicKey": "bm90IGEga2V5",`+"\n"+`  "subnet"`, 1)
		}, []string{"publicKey"}},
		{"bad cidr", func(c string) string { return strings.Replace(c, `10.99.0.0/24`, `10.99.0.0/33`, 1) }, []string{"subnet", "10.99.0.0/33"}},
		{"port in use", func(c string) string { return strings.Replace(c, `127.0.0.1:0`, taken.Addr().String(), 1) }, []string{taken.Addr().String()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := hubDir(t)
			path := writeHubConfig(t, dir, map[string]any{"transportMode": "websocket"})
			b, _ := os.ReadFile(path)
			if err := os.WriteFile(path, []byte(tc.edit(string(b))), 0o600); err != nil {
				t.Fatal(err)
			}
			_, errOut, code := runWarren(t, "", "hub", "--config", path, "--admin-socket", "", "--registry", filepath.Join(dir, "r.json"), "--log-level", "error")
			if code != 1 {
				t.Fatalf("exit %d, want 1; stderr:\n%s", code, errOut)
			}
			lines := strings.Split(strings.TrimSpace(errOut), "\n")
			if len(lines) != 1 {
				t.Fatalf("stderr has %d lines, want 1:\n%s", len(lines), errOut)
			}
			for _, w := range tc.wants {
				if !strings.Contains(lines[0], w) {
					t.Fatalf("stderr %q does not name %q", lines[0], w)
				}
			}
			if tc.name != "port in use" {
				_, checkErr, code := runWarren(t, "", "check", "--config", path)
				if code != 1 || strings.TrimSpace(checkErr) != lines[0] {
					t.Fatalf("warren check: exit %d, %q; want exit 1 and the hub's line", code, checkErr)
				}
			}
		})
	}
}

func TestCheckAcceptsAGoodConfig(t *testing.T) {
	dir := hubDir(t)
	path := writeHubConfig(t, dir, nil)
	if out := mustWarren(t, "check", "--config", path); !strings.Contains(out, "ok") {
		t.Fatalf("check: %s", out)
	}
}

func TestInstallPrintsTheGeneratedUnit(t *testing.T) {
	for _, tc := range []struct {
		platform install.Platform
		mode     install.Mode
	}{{install.Systemd, install.Hub}, {install.Systemd, install.Client}, {install.Launchd, install.Hub}} {
		want, err := install.Generate(tc.platform, install.Options{Mode: tc.mode})
		if err != nil {
			t.Fatal(err)
		}
		got := mustWarren(t, "install", "--mode", string(tc.mode), "--platform", string(tc.platform))
		if got != want {
			t.Fatalf("warren install --mode %s --platform %s:\n%s\nwant:\n%s", tc.mode, tc.platform, got, want)
		}
	}
	if _, _, code := runWarren(t, "", "install", "--mode", "daemon"); code != 1 {
		t.Fatalf("install --mode daemon: exit %d, want 1", code)
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"hub"},
		{"keygen", "--bogus"},
		{"client", "get"},
		{"client", "explode", "x"},
		{"hub", "--config", "x.json", "--log-format", "xml"},
	} {
		if _, errOut, code := runWarren(t, "", args...); code != 2 {
			t.Errorf("warren %v: exit %d, want 2; stderr: %s", args, code, errOut)
		}
	}
	if _, errOut, code := runWarren(t, "", "client", "list", "--admin-socket", filepath.Join(hubDir(t), "none.sock")); code != 1 || !strings.Contains(errOut, "is the hub running") {
		t.Errorf("client list without a hub: exit %d, %s", code, errOut)
	}
}

func TestSelfSignedCertSurvivesRestart(t *testing.T) {
	dir := hubDir(t)
	cfgPath := writeHubConfig(t, dir, map[string]any{"transportMode": "websocket", "listenAddr": freeAddr(t)})
	args := []string{"--config", cfgPath, "--registry", filepath.Join(dir, "r.json"), "--self-signed-cert", filepath.Join(dir, "tls.pem")}
	hub, sock := startHub(t, dir, args...)
	cfgFile := filepath.Join(dir, "desk.json")
	mustWarren(t, "client", "create", "desk", "--admin-socket", sock, "--out", cfgFile)
	hub.cmd.Process.Signal(syscall.SIGTERM)
	if code := hub.wait(t, time.Minute); code != 0 {
		t.Fatalf("hub exit %d\n%s", code, hub.stderr)
	}
	if fi, err := os.Stat(filepath.Join(dir, "tls.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("certificate file: %v, mode %v; want 0600", err, fi.Mode())
	}

	hub, _ = startHub(t, dir, args...)
	// The config made before the restart still connects: same pin.
	conn := start(t, "connect", "--config", cfgFile)
	eventually(t, "warren connect after a hub restart", time.Minute, func() bool {
		select {
		case <-conn.done:
			t.Fatalf("warren connect exited: %v\n%s", conn.err, conn.stderr)
		default:
		}
		return strings.Contains(conn.stdout.String(), "connected as 10.99.0.2/24")
	})
	conn.cmd.Process.Signal(syscall.SIGTERM)
	if code := conn.wait(t, time.Minute); code != 0 {
		t.Fatalf("warren connect exit %d after SIGTERM\n%s", code, conn.stderr)
	}
	hub.cmd.Process.Signal(syscall.SIGTERM)
	if code := hub.wait(t, time.Minute); code != 0 {
		t.Fatalf("hub exit %d\n%s", code, hub.stderr)
	}
}

// freeAddr is a loopback TCP address free a moment ago: a hub that restarts
// must come back on the port its bundles name.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestConnectCarriesTrafficThroughTheHub(t *testing.T) {
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.RemoteAddr)
	}))
	defer web.Close()
	webAddr := strings.TrimPrefix(web.URL, "http://")

	dir := hubDir(t)
	cfgPath := writeHubConfig(t, dir, map[string]any{
		"transportMode":     "websocket",
		"enableNat":         true,
		"destinationPolicy": map[string]any{"default": "block", "allowList": []string{"127.0.0.1"}},
	})
	hub, sock := startHub(t, dir, "--config", cfgPath)
	cfgFile := filepath.Join(dir, "c.json")
	mustWarren(t, "client", "create", "c", "--admin-socket", sock, "--out", cfgFile)
	conn := start(t, "connect", "--config", cfgFile, "--forward", "127.0.0.1:0="+webAddr)
	re := regexp.MustCompile(`forwarding (127\.0\.0\.1:\d+) to`)
	var local string
	eventually(t, "warren connect to forward", time.Minute, func() bool {
		select {
		case <-conn.done:
			t.Fatalf("warren connect exited: %v\n%s\n%s", conn.err, conn.stdout, conn.stderr)
		default:
		}
		m := re.FindStringSubmatch(conn.stdout.String())
		if m != nil {
			local = m[1]
		}
		return m != nil
	})
	// The link quality is printed with the address; nothing is measured
	// yet this early, so each part is a value or "unknown".
	quality := regexp.MustCompile(`(?m)^connected as 10\.99\.0\.2/24 over websocket .*\nlink quality: health (unknown|healthy|degraded|critical), rtt (unknown|[0-9.]+[µm]?s), loss (unknown|[0-9.]+% of [0-9]+ keepalives)$`)
	if !quality.MatchString(conn.stdout.String()) {
		t.Fatalf("warren connect printed no link quality line after connecting:\n%s", conn.stdout)
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Get("http://" + local + "/")
	if err != nil {
		t.Fatalf("GET through the tunnel: %v\n%s", err, conn.stderr)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(body), "hello 127.0.0.1:") {
		t.Fatalf("GET through the tunnel: %q", body)
	}
	// The hub's counters show the request went through it.
	var stats warren.Statistics
	if err := json.Unmarshal([]byte(mustWarren(t, "stats", "--admin-socket", sock)), &stats); err != nil || stats.BytesIn == 0 || stats.BytesOut == 0 {
		t.Fatalf("hub counters after traffic: %+v, %v", stats, err)
	}
	conn.cmd.Process.Signal(syscall.SIGINT)
	if code := conn.wait(t, time.Minute); code != 0 {
		t.Fatalf("warren connect exit %d after SIGINT\n%s", code, conn.stderr)
	}

	// forwardingMode tun from the config is honoured: --forward, which needs
	// netstack's Dial, is refused rather than silently failing later.
	var raw map[string]any
	b, err := os.ReadFile(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	raw["forwardingMode"] = "tun"
	tunFile := filepath.Join(dir, "tun.json")
	if b, err = json.Marshal(raw); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tunFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := runWarren(t, "", "connect", "--config", tunFile, "--forward", "127.0.0.1:0="+webAddr); code != 2 || !strings.Contains(errOut, "forwardingMode tun") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("connect --forward in tun mode: exit %d, want 2; stderr:\n%s", code, errOut)
	}
	hub.cmd.Process.Signal(syscall.SIGTERM)
	if code := hub.wait(t, time.Minute); code != 0 {
		t.Fatalf("hub exit %d\n%s", code, hub.stderr)
	}
}
