package coordinator

import (
	"bytes"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestKeepalivePolicy talks raw HTTP/2 (what a gRPC client's keepalive
// does on the wire) to a dev server whose KeepaliveMinTime is scaled down
// to 150ms: pings every 400ms on an idle connection with no stream are
// answered and never cause GOAWAY ENHANCE_YOUR_CALM; pings faster than
// MinTime do; and the server pings an idle client itself every
// KeepaliveTime. gRPC's default policy (MinTime 5 min, no pings without a
// stream) fails the first part on the third ping.
func TestKeepalivePolicy(t *testing.T) {
	cfg := DevConfig()
	cfg.DataDir = t.TempDir()
	cfg.GRPCAddr, cfg.RaftAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.GossipAddr, cfg.GossipProfile = "127.0.0.1:0", "local"
	cfg.Logger = testLogger(t)
	cfg.KeepaliveMinTime = 150 * time.Millisecond
	cfg.KeepaliveTime = time.Second // gRPC's floor for server pings
	n := startNode(t, cfg)
	waitReady(t, n)

	type h2conn struct {
		fr     *http2.Framer
		frames chan http2.Frame
	}
	dial := func() h2conn {
		c, err := net.Dial("tcp", n.GRPCAddr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
			t.Fatal(err)
		}
		fr := http2.NewFramer(c, c)
		if err := fr.WriteSettings(); err != nil {
			t.Fatal(err)
		}
		frames := make(chan http2.Frame, 64)
		rfr := http2.NewFramer(nil, c)
		go func() {
			defer close(frames)
			for {
				f, err := rfr.ReadFrame()
				if err != nil {
					return
				}
				frames <- f
			}
		}()
		return h2conn{fr: fr, frames: frames}
	}
	// drain handles frames until d passes; it acks settings and the
	// server's pings, and returns the GOAWAY (if any) and the number of
	// server-initiated pings.
	drain := func(c h2conn, d time.Duration) (goAway *http2.GoAwayFrame, serverPings int) {
		deadline := time.After(d)
		for {
			select {
			case f, ok := <-c.frames:
				if !ok {
					return goAway, serverPings
				}
				switch f := f.(type) {
				case *http2.SettingsFrame:
					if !f.IsAck() {
						if err := c.fr.WriteSettingsAck(); err != nil {
							t.Fatal(err)
						}
					}
				case *http2.PingFrame:
					if !f.IsAck() {
						serverPings++
						if err := c.fr.WritePing(true, f.Data); err != nil {
							t.Fatal(err)
						}
					}
				case *http2.GoAwayFrame:
					g := *f
					goAway = &g
				}
			case <-deadline:
				return goAway, serverPings
			}
		}
	}
	ping := func(c h2conn) {
		if err := c.fr.WritePing(false, [8]byte{1}); err != nil {
			t.Fatalf("ping: %v", err)
		}
	}

	// Within the policy: 4 pings, 400ms apart, no stream open.
	ok := dial()
	for range 4 {
		ping(ok)
		if g, _ := drain(ok, 400*time.Millisecond); g != nil {
			t.Fatalf("GOAWAY %v %q after pings within the policy", g.ErrCode, g.DebugData())
		}
	}
	// Silent client: the server pings it (and keeps the connection, as
	// the pings are answered).
	g, sp := drain(ok, 2500*time.Millisecond)
	if g != nil || sp == 0 {
		t.Fatalf("idle client for 2.5s: GOAWAY %v, %d server pings; want pings every KeepaliveTime (1s)", g, sp)
	}

	// Faster than MinTime: the server calls it abuse.
	bad := dial()
	for range 5 {
		ping(bad)
	}
	g, _ = drain(bad, 3*time.Second)
	if g == nil || g.ErrCode != http2.ErrCodeEnhanceYourCalm || !bytes.Equal(g.DebugData(), []byte("too_many_pings")) {
		t.Fatalf("pings 5 in a row: GOAWAY = %v, want ENHANCE_YOUR_CALM too_many_pings", g)
	}
}
