package etcdstore_test

import (
	"context"
	"log"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/warrenvpn/warren"
	"github.com/warrenvpn/warren/etcdstore"
)

// Example is the README's "Running several hubs" snippet: every hub of the
// fleet runs this with its own keys and the same etcd and prefix.
func Example() {
	keys, err := warren.GenerateKeypair()
	if err != nil {
		log.Fatal(err)
	}
	// README begin
	store, err := etcdstore.New(etcdstore.Config{
		Endpoints: []string{"http://10.0.0.5:2379"},
		Prefix:    "/warren/", // the same on every hub of the fleet
	})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	hub, err := warren.NewServer(warren.ServerConfig{
		ListenAddr: "0.0.0.0:443",
		PrivateKey: keys.PrivateKey,
		PublicKey:  keys.PublicKey,
		Subnet:     netip.MustParsePrefix("10.8.0.0/16"), // the same on every hub
		Store:      store,
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := hub.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	// README end
}

// The README's snippet is the one Example compiles.
func TestREADMESeveralHubsSnippetIsExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), "## Running several hubs\n")
	if !ok {
		t.Fatal("README.md has no section ## Running several hubs")
	}
	_, block, ok := strings.Cut(after, "```go\n")
	block, _, ok2 := strings.Cut(block, "```\n")
	if !ok || !ok2 {
		t.Fatal("README.md: no ```go block under ## Running several hubs")
	}
	_, body, _ := strings.Cut(string(src), "\t// README begin\n")
	body, _, _ = strings.Cut(body, "\t// README end\n")
	var want strings.Builder
	for line := range strings.Lines(body) {
		want.WriteString(strings.TrimPrefix(line, "\t"))
	}
	if block != want.String() {
		t.Fatalf("README.md's snippet differs from Example in example_test.go:\n%s\nwant:\n%s", block, want.String())
	}
}
