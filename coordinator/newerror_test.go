package coordinator

import (
	"net"
	"strings"
	"testing"
)

// TestNewErrorAfterListeners: New failing after it opened listeners returns
// the error (it used to panic: the deferred cleanup read the named result,
// already nil) and closes what it opened.
func TestNewErrorAfterListeners(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := DevConfig()
	cfg.DataDir = t.TempDir()
	cfg.GRPCAddr, cfg.RaftAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0", busy.Addr().String()
	cfg.GossipAddr, cfg.GossipProfile = "127.0.0.1:0", "local"
	cfg.Logger = testLogger(t)
	s, err := New(cfg)
	if err == nil {
		t.Fatal("New with a busy HTTP address succeeded")
	}
	if s != nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("New = %v, %v; want nil and an address-in-use error", s, err)
	}
}
