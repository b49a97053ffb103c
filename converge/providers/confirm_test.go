package providers_test

import (
	"testing"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/providers"
	"github.com/hivefleet/hive/site/kinds"
)

// TestConfirmKindsCanSnapshot: every kind the site accepts `confirm:` on
// has a default provider that can snapshot and restore (the firewall
// keeps its own window and is not in the default registry without its
// provider), and no other kind's provider claims to.
func TestConfirmKindsCanSnapshot(t *testing.T) {
	reg, err := providers.Default(providers.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"file", "sysctl"} {
		if reg.Provider(k) == nil {
			t.Fatalf("no default %s provider", k)
		}
	}
	for _, k := range kinds.All {
		p := reg.Provider(k.Name)
		if p == nil {
			continue
		}
		_, snap := p.(converge.Snapshotter)
		if k.Confirm && k.Name != converge.KindFirewall && !snap {
			t.Errorf("%s takes confirm: but its provider %T cannot snapshot", k.Name, p)
		}
		if !k.Confirm && snap {
			t.Errorf("%s's provider %T can snapshot: mark the kind Confirm in site/kinds", k.Name, p)
		}
	}
}
