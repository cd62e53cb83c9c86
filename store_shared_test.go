package warren_test

import (
	"path/filepath"
	"testing"

	"github.com/warrenvpn/warren"
	"github.com/warrenvpn/warren/storetest"
)

func TestStoreSuiteMemoryStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) warren.Store { return warren.NewMemoryStore() })
}

func TestStoreSuiteFileStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) warren.Store {
		s, err := warren.NewFileStore(filepath.Join(t.TempDir(), "registry.json"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
