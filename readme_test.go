package warren

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"
)

// readmeSection returns the text of the README section under heading ("##
// Embedding"), up to the next heading of the same level; heading "" is the
// text before the first "## " heading.
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	in := heading == ""
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(line, "## ") {
			if in {
				break
			}
			in = strings.TrimSpace(line) == heading
			continue
		}
		if in {
			out = append(out, line)
		}
	}
	if heading != "" && len(out) == 0 {
		t.Fatalf("README.md has no section %q", heading)
	}
	return strings.Join(out, "")
}

// fencedBlocks returns the bodies of the ```lang code blocks in text, in order.
func fencedBlocks(text, lang string) []string {
	var blocks []string
	var cur []string
	in := false
	for line := range strings.Lines(text) {
		trimmed := strings.TrimSpace(line)
		switch {
		case !in && trimmed == "```"+lang:
			in, cur = true, nil
		case in && trimmed == "```":
			in = false
			blocks = append(blocks, strings.Join(cur, ""))
		case in:
			cur = append(cur, line)
		}
	}
	return blocks
}

// TestREADMEEmbeddingExampleRuns builds the README's embedding example as a
// program of its own, in a module that requires this checkout (offline: the
// checkout's go.sum and the module cache), runs it against loopback and checks
// that it fetched a page through the tunnel each way.
func TestREADMEEmbeddingExampleRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a program")
	}
	blocks := fencedBlocks(readmeSection(t, "## Embedding"), "go")
	if len(blocks) == 0 {
		t.Fatal("README.md: no ```go block under ## Embedding")
	}
	src := blocks[0]
	if !strings.HasPrefix(src, "package main\n") {
		t.Fatalf("README.md: the ```go block under ## Embedding must be a whole program starting with \"package main\"; it starts:\n%s", firstLines(src, 3))
	}

	// go test puts GOROOT/bin first in PATH, so this is the go that runs the test.
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The example's module starts as a copy of this one's go.mod and go.sum,
	// so it needs the same modules at the same versions (all in the module
	// cache), and then requires this checkout in their place.
	for _, name := range []string{"go.mod", "go.sum"} {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env := append(os.Environ(),
		// -mod=mod lets go add to the copied go.mod whatever the example
		// needs; GOPROXY=off proves that nothing needs fetching.
		"GOFLAGS=-mod=mod -buildvcs=false",
		"GOPROXY=off",
		"GOWORK=off",
		"GOTOOLCHAIN=local",
	)
	edit := exec.CommandContext(ctx, goBin, "mod", "edit", "-module", "readmeexample",
		"-require", "github.com/warrenvpn/warren@v0.0.0",
		"-replace", "github.com/warrenvpn/warren="+root)
	edit.Dir, edit.Env = dir, env
	if out, err := edit.CombinedOutput(); err != nil {
		t.Fatalf("go mod edit: %v\n%s", err, out)
	}
	exe := filepath.Join(dir, "example")
	args := []string{"build", "-o", exe}
	if raceEnabled() {
		// Built like this test, the example reuses the packages the test's
		// build left in the cache, and runs under the race detector too.
		args = append(args, "-race")
	}
	build := exec.CommandContext(ctx, goBin, append(args, ".")...)
	build.Dir, build.Env = dir, env
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("README.md ## Embedding example does not build: %v\n%s", err, out)
	}

	runCtx, cancelRun := context.WithTimeout(ctx, 90*time.Second)
	defer cancelRun()
	tmp := t.TempDir()
	run := exec.CommandContext(runCtx, exe)
	run.Dir = dir
	run.Env = append(os.Environ(), "TMPDIR="+tmp)
	var stdout, stderr bytes.Buffer
	run.Stdout, run.Stderr = &stdout, &stderr
	err = run.Run()
	if errors.Is(runCtx.Err(), context.DeadlineExceeded) {
		t.Fatalf("README.md ## Embedding example did not finish in 90 s\nstdout:\n%s\nstderr:\n%s", &stdout, &stderr)
	}
	if err != nil {
		t.Fatalf("README.md ## Embedding example failed: %v\nstdout:\n%s\nstderr:\n%s", err, &stdout, &stderr)
	}
	t.Logf("output:\n%s", &stdout)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^laptop-1 connected as 10\.8\.0\.2/24 over websocket$`),
		regexp.MustCompile(`(?m)^laptop-1 got "hello 10\.8\.0\.2:\d+, this is the hub"$`),
		regexp.MustCompile(`(?m)^the hub got "hello 10\.8\.0\.1:\d+, this is laptop-1"$`),
	} {
		if !want.Match(stdout.Bytes()) {
			t.Errorf("README.md ## Embedding example's output has no line matching %s; output:\n%s", want, &stdout)
		}
	}
	for _, d := range []string{dir, tmp} {
		entries, err := os.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		var left []string
		for _, e := range entries {
			if !slices.Contains([]string{"go.mod", "go.sum", "main.go", "example"}, e.Name()) {
				left = append(left, e.Name())
			}
		}
		if len(left) > 0 {
			t.Errorf("the example left %v behind in %s", left, d)
		}
	}
}

// TestREADMECommands checks the two commands the README's top promises: the
// quickstart that exists, then the test command CI runs.
func TestREADMECommands(t *testing.T) {
	blocks := fencedBlocks(readmeSection(t, ""), "sh")
	if len(blocks) == 0 {
		t.Fatal("README.md: no ```sh block before the first section")
	}
	var cmds []string
	for line := range strings.Lines(blocks[0]) {
		cmd, _, _ := strings.Cut(line, "#")
		if cmd = strings.Join(strings.Fields(cmd), " "); cmd != "" {
			cmds = append(cmds, cmd)
		}
	}
	want := []string{"go run ./examples/quickstart", "go test -race ./..."}
	if !slices.Equal(cmds, want) {
		t.Fatalf("README.md's first commands are %q, want %q", cmds, want)
	}
	main, err := os.ReadFile(filepath.Join("examples", "quickstart", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^package main$`).Match(main) || !regexp.MustCompile(`(?m)^func main\(\)`).Match(main) {
		t.Error("examples/quickstart/main.go is not a main package")
	}
	ci, err := os.ReadFile(filepath.Join(".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^go test -race \./\.\.\.`).Match(ci) {
		t.Error("README.md says CI runs `go test -race ./...`, but .ci/run does not")
	}
}

// raceEnabled reports whether this test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

func firstLines(s string, n int) string {
	lines := strings.SplitAfterN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "")
}
