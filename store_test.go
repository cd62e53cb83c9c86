package warren

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// testEntry returns a deterministic entry for index i, so a reader can check
// every field it finds.
func testEntry(i int) ClientEntry {
	var pub, wg Key
	pub[0], pub[1], pub[31] = byte(i), byte(i>>8), 1
	wg[0], wg[1], wg[31] = byte(i), byte(i>>8), 2
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Add(time.Duration(i) * time.Second)
	return ClientEntry{
		ClientID:    fmt.Sprintf("client-%05d", i),
		PublicKey:   pub,
		WGPublicKey: wg,
		AssignedIP:  netip.AddrFrom4([4]byte{10, 8, byte(i >> 8), byte(i)}),
		Security: &ClientSecurity{
			IPAllowList:          []string{"203.0.113.0/24"},
			DestinationBlockList: []string{"10.9.*.*"},
			MaxConnections:       i % 4,
			RateLimit:            &RateLimit{BytesPerSec: int64(1000 + i), BurstBytes: 64},
		},
		Priority:                i % 7,
		ServerDefinedClientTags: []string{"tag-" + strconv.Itoa(i%3)},
		ClientDefinedClientTags: []string{"os=linux"},
		Description:             "entry " + strconv.Itoa(i),
		Enabled:                 i%2 == 0,
		ExpiresAt:               ts.Add(24 * time.Hour),
		CreatedAt:               ts,
		UpdatedAt:               ts,
	}
}

func storeKinds(t *testing.T) map[string]func() Store {
	dir := t.TempDir()
	n := 0
	return map[string]func() Store{
		"MemoryStore": func() Store { return NewMemoryStore() },
		"FileStore": func() Store {
			n++
			s, err := NewFileStore(filepath.Join(dir, fmt.Sprintf("registry%d.json", n)))
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	}
}

func TestStoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	for name, mk := range storeKinds(t) {
		t.Run(name, func(t *testing.T) {
			s := mk()
			got, err := s.Load(ctx)
			if err != nil || len(got) != 0 {
				t.Fatalf("Load of a new store = %v, %v; want empty", got, err)
			}
			for _, i := range []int{2, 0, 1} {
				if err := s.Put(ctx, testEntry(i)); err != nil {
					t.Fatal(err)
				}
			}
			got, err = s.Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := []ClientEntry{testEntry(0), testEntry(1), testEntry(2)}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Load = %+v, want %+v (sorted by ClientID)", got, want)
			}

			// Replace.
			e := testEntry(1)
			e.Description = "replaced"
			e.Enabled = false
			if err := s.Put(ctx, e); err != nil {
				t.Fatal(err)
			}
			// Delete, twice; the second is not an error.
			for range 2 {
				if err := s.Delete(ctx, "client-00000"); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Delete(ctx, "never-existed"); err != nil {
				t.Fatal(err)
			}
			got, err = s.Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want = []ClientEntry{e, testEntry(2)}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Load = %+v, want %+v", got, want)
			}
		})
	}
}

func TestStoreNeverSharesSlicesWithCallers(t *testing.T) {
	ctx := context.Background()
	for name, mk := range storeKinds(t) {
		t.Run(name, func(t *testing.T) {
			s := mk()
			e := testEntry(1)
			if err := s.Put(ctx, e); err != nil {
				t.Fatal(err)
			}
			// Mutating what was put must not reach the store.
			e.ServerDefinedClientTags[0] = "mutated"
			e.Security.IPAllowList[0] = "mutated"
			e.Security.RateLimit.BytesPerSec = 1
			got, _ := s.Load(ctx)
			if !reflect.DeepEqual(got[0], testEntry(1)) {
				t.Fatalf("store shares slices with the Put argument: %+v", got[0])
			}
			// Mutating what was loaded must not reach the store either.
			got[0].ClientDefinedClientTags[0] = "mutated"
			got[0].Security.DestinationBlockList[0] = "mutated"
			got[0].Security.RateLimit.BurstBytes = 1
			again, _ := s.Load(ctx)
			if !reflect.DeepEqual(again[0], testEntry(1)) {
				t.Fatalf("store shares slices with Load results: %+v", again[0])
			}
		})
	}
}

func TestStoreRejectsEmptyClientIDAndCanceledContext(t *testing.T) {
	for name, mk := range storeKinds(t) {
		t.Run(name, func(t *testing.T) {
			s := mk()
			var ce *ConfigError
			if err := s.Put(context.Background(), ClientEntry{}); !errors.As(err, &ce) || ce.Field != "clientId" {
				t.Errorf("Put with no ClientID = %v, want *ConfigError for clientId", err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := s.Put(ctx, testEntry(1)); !errors.Is(err, context.Canceled) {
				t.Errorf("Put with a canceled context = %v", err)
			}
			if _, err := s.Load(ctx); !errors.Is(err, context.Canceled) {
				t.Errorf("Load with a canceled context = %v", err)
			}
			if err := s.Delete(ctx, "x"); !errors.Is(err, context.Canceled) {
				t.Errorf("Delete with a canceled context = %v", err)
			}
			if got, _ := s.Load(context.Background()); len(got) != 0 {
				t.Errorf("rejected calls changed the store: %+v", got)
			}
		})
	}
}

func TestStoreConcurrentUse(t *testing.T) {
	ctx := context.Background()
	for name, mk := range storeKinds(t) {
		t.Run(name, func(t *testing.T) {
			s := mk()
			var wg sync.WaitGroup
			for g := range 4 {
				wg.Go(func() {
					for i := g * 10; i < g*10+10; i++ {
						if err := s.Put(ctx, testEntry(i)); err != nil {
							t.Error(err)
						}
						if _, err := s.Load(ctx); err != nil {
							t.Error(err)
						}
					}
				})
			}
			wg.Wait()
			got, err := s.Load(ctx)
			if err != nil || len(got) != 40 {
				t.Fatalf("Load = %d entries, %v; want 40", len(got), err)
			}
		})
	}
}

func TestFileStorePersistsThousandEntries(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.json")
	s, err := NewFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("NewFileStore created the file before any write: %v", err)
	}
	const n = 1000
	for i := n - 1; i >= 0; i-- {
		if err := s.Put(ctx, testEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, testEntry(500).ClientID); err != nil {
		t.Fatal(err)
	}

	s2, err := NewFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s2.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n-1 {
		t.Fatalf("reloaded %d entries, want %d", len(got), n-1)
	}
	for i, j := 0, 0; i < n; i++ {
		if i == 500 {
			continue
		}
		if !reflect.DeepEqual(got[j], testEntry(i)) {
			t.Fatalf("reloaded entry %d = %+v, want %+v", j, got[j], testEntry(i))
		}
		j++
	}

	// The document is the documented shape, sorted by clientId, laid out as
	// json.MarshalIndent lays it out.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	wantDoc, err := json.MarshalIndent(fileStoreDoc{Version: 1, Clients: got}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != string(wantDoc)+"\n" {
		t.Errorf("document differs from json.MarshalIndent's layout")
	}
	var doc struct {
		Version int               `json:"version"`
		Clients []json.RawMessage `json:"clients"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Version != 1 || len(doc.Clients) != n-1 {
		t.Fatalf("document version %d with %d clients", doc.Version, len(doc.Clients))
	}
	if !strings.Contains(string(doc.Clients[0]), `"clientId": "client-00000"`) {
		t.Errorf("first client is %s", doc.Clients[0])
	}
	// No temporary files are left behind.
	ents, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		t.Errorf("directory holds %d files, want only the registry: %v", len(ents), ents)
	}
}

func TestFileStoreEmptyRegistryDocument(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.json")
	s, err := NewFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, testEntry(7)); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, testEntry(7).ClientID); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := "{\n  \"version\": 1,\n  \"clients\": []\n}\n"; string(b) != want {
		t.Errorf("empty registry document = %q, want %q", b, want)
	}
}

func TestFileStoreMissingOrEmptyFileIsEmptyRegistry(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.json")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(dir, "missing.json"), empty} {
		s, err := NewFileStore(p)
		if err != nil {
			t.Fatalf("NewFileStore(%s): %v", p, err)
		}
		if got, err := s.Load(context.Background()); err != nil || len(got) != 0 {
			t.Errorf("Load(%s) = %v, %v; want empty", p, got, err)
		}
	}
	if _, err := NewFileStore(""); err == nil {
		t.Error("NewFileStore(\"\") succeeded")
	}
}

func TestFileStoreCorruptFileIsAnErrorNamingThePath(t *testing.T) {
	dir := t.TempDir()
	tests := []struct{ name, content, reason string }{
		{"truncated", `{"version":1,"clients":[{"clientId":"a"`, "cut short"},
		{"garbage", "\x00\x01not json", "line 1, column 1: invalid character"},
		{"trailing", `{"version":1,"clients":[]} {}`, "line 1, column 28: data after the JSON object"},
		{"wrong type", `{"version":1,"clients":{}}`, "invalid clients \"{}\": want a JSON array"},
		{"bad key", `{"version":1,"clients":[{"clientId":"a","publicKey":"!!"}]}`, "invalid clients[0].publicKey: key is not standard base64"},
		{"unknown field", `{"version":1,"clients":[{"clientId":"a","enabeld":true}]}`, `invalid clients[0].enabeld: unknown field; did you mean "enabled"?`},
		{"version", `{"version":2,"clients":[]}`, "unsupported version 2"},
		{"no version", `{"clients":[]}`, "unsupported version 0"},
		{"no id", `{"version":1,"clients":[{"description":"x"}]}`, "clients[0] has no clientId"},
		{"duplicate", `{"version":1,"clients":[{"clientId":"a"},{"clientId":"a"}]}`, "duplicate clientId"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".json")
			if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := NewFileStore(p)
			if err == nil {
				t.Fatalf("NewFileStore of a corrupt file = %v, want error", s)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "warren: ") || !strings.Contains(msg, p) || !strings.Contains(msg, tt.reason) {
				t.Errorf("error %q: want prefix, path %s and %q", msg, p, tt.reason)
			}
		})
	}
	// A path that is a directory cannot be read either.
	if _, err := NewFileStore(dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("NewFileStore(dir) = %v", err)
	}
}

func TestFileStoreFailedWriteChangesNothing(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "reg")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "registry.json")
	s, err := NewFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, testEntry(1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, testEntry(2)); err != nil {
		t.Fatal(err)
	}
	want, _ := s.Load(ctx)

	// The directory disappears and a file takes its place: every write must fail.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	changed := testEntry(1)
	changed.Description = "changed"
	for _, op := range []struct {
		name string
		do   func() error
	}{
		{"put new", func() error { return s.Put(ctx, testEntry(3)) }},
		{"put replace", func() error { return s.Put(ctx, changed) }},
		{"delete", func() error { return s.Delete(ctx, testEntry(2).ClientID) }},
	} {
		err := op.do()
		if err == nil {
			t.Fatalf("%s: succeeded with no directory to write in", op.name)
		}
		if !strings.HasPrefix(err.Error(), "warren: ") || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %q does not name %s", op.name, err, path)
		}
		got, err := s.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: failed write changed the store: %+v, want %+v", op.name, got, want)
		}
	}

	// Once the directory is back, writes succeed and carry the whole registry.
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, testEntry(3)); err != nil {
		t.Fatal(err)
	}
	s2, err := NewFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := s2.Load(ctx)
	if want := []ClientEntry{testEntry(1), testEntry(2), testEntry(3)}; !reflect.DeepEqual(got, want) {
		t.Fatalf("reloaded %+v, want %+v", got, want)
	}
}

const fileStoreHelperEnv = "WARREN_FILESTORE_HELPER_PATH"

// TestFileStoreHelperProcess is not a test: TestFileStoreSurvivesSIGKILL runs the
// test binary again with this test selected, and it Puts entries until killed.
func TestFileStoreHelperProcess(t *testing.T) {
	path := os.Getenv(fileStoreHelperEnv)
	if path == "" {
		t.Skip("helper process for TestFileStoreSurvivesSIGKILL")
	}
	s, err := NewFileStore(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx := context.Background()
	for i := 0; ; i++ {
		// Grow the registry and rewrite an earlier entry, so a torn write would
		// show as a gap, a missing field or a stale value.
		if err := s.Put(ctx, testEntry(i)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		if i > 0 && i%10 == 0 {
			if err := s.Delete(ctx, testEntry(i-5).ClientID); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			if err := s.Put(ctx, testEntry(i-5)); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
		}
	}
}

func TestFileStoreSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	for run, delay := range []time.Duration{100, 130, 170, 230, 310} {
		delay *= time.Millisecond
		t.Run(fmt.Sprintf("kill after %v", delay), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "registry.json")
			cmd := exec.Command(os.Args[0], "-test.run=^TestFileStoreHelperProcess$", "-test.count=1")
			cmd.Env = append(os.Environ(), fileStoreHelperEnv+"="+path)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			killed := false
			defer func() {
				if !killed {
					cmd.Process.Kill()
					cmd.Wait()
				}
			}()

			// Wait until the file exists, then let it grow for delay.
			deadline := time.Now().Add(30 * time.Second)
			var first int64
			for {
				if fi, err := os.Stat(path); err == nil {
					first = fi.Size()
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("helper never wrote %s; stderr: %s", path, stderr.String())
				}
				time.Sleep(2 * time.Millisecond)
			}
			time.Sleep(delay)
			for {
				fi, err := os.Stat(path)
				if err == nil && fi.Size() > first {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s never grew; stderr: %s", path, stderr.String())
				}
				time.Sleep(2 * time.Millisecond)
			}
			if err := cmd.Process.Kill(); err != nil { // SIGKILL
				t.Fatal(err)
			}
			killed = true
			if err := cmd.Wait(); err == nil {
				t.Fatalf("helper exited cleanly; stderr: %s", stderr.String())
			}

			s, err := NewFileStore(path)
			if err != nil {
				t.Fatalf("run %d: reopening after SIGKILL: %v", run, err)
			}
			got, err := s.Load(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(got) < 2 {
				t.Fatalf("registry after SIGKILL has %d entries, want it to have grown", len(got))
			}
			// Consistent: entries 0..n-1, except at most one in the middle of its
			// delete-and-put, each exactly as written.
			missing := 0
			for i, j := 0, 0; j < len(got); i++ {
				if got[j].ClientID != testEntry(i).ClientID {
					missing++
					if missing > 1 || i > len(got)+1 {
						t.Fatalf("registry has a gap at %s (found %s)", testEntry(i).ClientID, got[j].ClientID)
					}
					continue
				}
				if !reflect.DeepEqual(got[j], testEntry(i)) {
					t.Fatalf("entry %d = %+v, want %+v", i, got[j], testEntry(i))
				}
				j++
			}
			t.Logf("registry after SIGKILL: %d entries", len(got))
		})
	}
}
