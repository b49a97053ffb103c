package coordinator

import (
	"context"
	"strings"
	"testing"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/grpc/codes"
)

// TestCheckHostFacts: every bound of the host facts a watch may carry,
// refused with InvalidArgument naming the field.
func TestCheckHostFacts(t *testing.T) {
	good := func() *hivev1.WatchNodeStateRequest {
		return &hivev1.WatchNodeStateRequest{Node: "n", OsFamily: "debian", OsVersion: "12", Kernel: "6.1.0-18-amd64",
			Hardware:   map[string]uint64{"cpus": 4, "memory_bytes": 8 << 30},
			Interfaces: map[string]string{"eth0": "10.0.0.5/24 fe80::1/64", "br-1@x": ""}}
	}
	f, err := checkHostFacts(good())
	if err != nil || f.GetKernel() != "6.1.0-18-amd64" || f.GetInterfaces()["eth0"] != "10.0.0.5/24 fe80::1/64" {
		t.Fatalf("good facts: %v %v", f, err)
	}
	if f, err := checkHostFacts(&hivev1.WatchNodeStateRequest{Node: "n"}); f != nil || err != nil {
		t.Fatalf("no facts: %v %v", f, err)
	}
	many := map[string]string{}
	for i := range MaxInterfaces + 1 {
		many["eth"+strings.Repeat("x", i%10)+string(rune('a'+i%26))+string(rune('a'+i/26))] = ""
	}
	for _, tc := range []struct {
		name string
		mod  func(r *hivev1.WatchNodeStateRequest)
		want string
	}{
		{"family charset", func(r *hivev1.WatchNodeStateRequest) { r.OsFamily = "deb ian" }, "os_family"},
		{"version newline", func(r *hivev1.WatchNodeStateRequest) { r.OsVersion = "12\n" }, "os_version"},
		{"kernel too long", func(r *hivev1.WatchNodeStateRequest) { r.Kernel = strings.Repeat("k", MaxKernelLen+1) }, "kernel"},
		{"zero cpus", func(r *hivev1.WatchNodeStateRequest) { r.Hardware["cpus"] = 0 }, "hardware[cpus]"},
		{"huge memory", func(r *hivev1.WatchNodeStateRequest) { r.Hardware["memory_bytes"] = 1 << 62 }, "hardware[memory_bytes]"},
		{"unknown size", func(r *hivev1.WatchNodeStateRequest) { r.Hardware["gpus"] = 1 }, `hardware["gpus"]: unknown key`},
		{"interface name", func(r *hivev1.WatchNodeStateRequest) { r.Interfaces["eth0;rm"] = "" }, "not an interface name"},
		{"long interface name", func(r *hivev1.WatchNodeStateRequest) { r.Interfaces[strings.Repeat("e", 16)] = "" }, "not an interface name"},
		{"address without prefix", func(r *hivev1.WatchNodeStateRequest) { r.Interfaces["eth0"] = "10.0.0.5" }, "not an address with prefix length"},
		{"address with zone", func(r *hivev1.WatchNodeStateRequest) { r.Interfaces["eth0"] = "fe80::1%eth0/64" }, "not an address with prefix length"},
		{"newline between addresses", func(r *hivev1.WatchNodeStateRequest) { r.Interfaces["eth0"] = "10.0.0.5/24\n10.0.0.6/24" }, "single spaces"},
		{"too many addresses", func(r *hivev1.WatchNodeStateRequest) {
			r.Interfaces["eth0"] = strings.TrimSpace(strings.Repeat("10.0.0.5/24 ", MaxInterfaceAddrs+1))
		}, "addresses; the limit is 16"},
		{"too many interfaces", func(r *hivev1.WatchNodeStateRequest) { r.Interfaces = many }, "interfaces; the limit is 32"},
	} {
		r := good()
		tc.mod(r)
		_, err := checkHostFacts(r)
		wantCode(t, tc.name, err, codes.InvalidArgument, tc.want)
	}
}

// TestWatchHostFacts: a watch's host facts reach the node's rendered
// NodeFacts; a watch with bad facts is refused and registers nothing.
func TestWatchHostFacts(t *testing.T) {
	n := startDev(t)
	c := dialPlain(t, n.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Push(ctx, &hivev1.PushRequest{Site: testSite("1")}); err != nil {
		t.Fatal(err)
	}
	w, err := c.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: "bad-1", Kernel: "6.1\x00"})
	if err == nil {
		_, err = w.Recv()
	}
	wantCode(t, "bad facts", err, codes.InvalidArgument, "kernel")
	if n.fsm.Store().Node("bad-1") != nil {
		t.Fatal("a watch refused for its facts registered the node")
	}
	w, err = c.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: "web-1", Labels: map[string]string{"tier": "web"},
		OsFamily: "rhel", OsVersion: "9.4", Kernel: "5.14.0", Hardware: map[string]uint64{"cpus": 2},
		Interfaces: map[string]string{"eth0": "10.0.0.5/24"}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := w.Recv()
	if err != nil {
		t.Fatal(err)
	}
	f := m.GetState().GetFacts()
	if f.GetOsFamily() != "rhel" || f.GetOsVersion() != "9.4" || f.GetKernel() != "5.14.0" || f.GetHardware()["cpus"] != 2 || f.GetInterfaces()["eth0"] != "10.0.0.5/24" {
		t.Fatalf("rendered facts: %v", f)
	}
}
