package firewall

import (
	"os"
	"testing"

	"github.com/hivefleet/hive/internal/netlab"
)

// TestMain removes the binaries netlab.Build made for the scenarios.
func TestMain(m *testing.M) {
	code := m.Run()
	netlab.CleanupBuilds()
	os.Exit(code)
}
