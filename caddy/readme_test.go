package caddy

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/warrenvpn/warren"
)

// TestREADMECaddyfileAdapts adapts the Caddyfile of the README's "Inside
// Caddy" section and checks that it gives the warren app a hub config the
// library accepts, the warren_hub handler and the warren transport.
func TestREADMECaddyfileAdapts(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Inside Caddy\n")
	if !ok {
		t.Fatal(`README.md has no section "## Inside Caddy"`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	_, block, ok := strings.Cut(section, "```caddyfile\n")
	if !ok {
		t.Fatal("the section has no ```caddyfile block")
	}
	block, _, _ = strings.Cut(block, "```")

	out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(block), nil)
	if err != nil {
		t.Fatalf("adapting the README's Caddyfile: %v", err)
	}
	for _, w := range warnings {
		t.Errorf("warning: %v", w)
	}
	if s := string(out); !strings.Contains(s, `"handler":"warren_hub"`) || !strings.Contains(s, `"protocol":"warren"`) {
		t.Errorf("adapted config lacks the warren_hub handler or the warren transport: %s", s)
	}
	var cfg struct {
		Apps struct {
			Warren json.RawMessage `json:"warren"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	var app App
	if err := json.Unmarshal(cfg.Apps.Warren, &app); err != nil {
		t.Fatal(err)
	}
	// The key file of the example is not here: give the hub a key.
	kp, err := warren.GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	hub := strings.Replace(string(app.Hub), `"file:/etc/caddy/warren.key"`, `"`+kp.PrivateKey.String()+`"`, 1)
	sc, err := warren.ParseServerConfig([]byte(hub))
	if err != nil {
		t.Fatalf("the README's warren { } block: %v", err)
	}
	sc.TransportMode, sc.ForwardingMode = warren.TransportWebSocket, warren.ForwardTesting
	srv, err := warren.NewServer(sc)
	if err != nil {
		t.Fatalf("the README's hub config: %v", err)
	}
	defer srv.Close()
	if e, err := srv.GetClient(t.Context(), "alice"); err != nil || !e.Enabled || e.AssignedIP.String() != "10.8.0.2" {
		t.Errorf("seeded client alice: %+v, %v", e, err)
	}
}
