package drbd

import (
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hivefleet/hive/internal/testenv"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

var update = flag.Bool("update", false, "rewrite golden files")

func peers(names ...string) []*hivev1.DrbdPeer {
	var out []*hivev1.DrbdPeer
	for i, n := range names {
		out = append(out, &hivev1.DrbdPeer{Name: n, Address: "10.78.0." + string(rune('1'+i))})
	}
	return out
}

// cases are the golden resources, rendered for their first peer.
var cases = []struct {
	name string
	d    *hivev1.Drbd
}{
	{"two-peers", &hivev1.Drbd{Name: "r0", Minor: 0, Disk: "/dev/vdb", Port: 7789, PeerRole: "storage", Peers: peers("store-a", "store-b")}},
	{"three-peers", &hivev1.Drbd{Name: "data", Minor: 3, Disk: "/dev/vg0/data", Port: 7790, Protocol: "a", PeerRole: "storage",
		Options: map[string]string{"net/verify-alg": "sha256", "disk/on-io-error": "detach", "options/auto-promote": "yes", "handlers/split-brain": "/usr/lib/drbd/notify-split-brain.sh root"},
		Peers:   []*hivev1.DrbdPeer{{Name: "s1", Address: "10.78.0.1", NodeId: 4}, {Name: "s2", Address: "10.78.0.2", NodeId: 2}, {Name: "s3", Address: "10.78.0.3", NodeId: 3}}}},
	{"ipv6-external-meta", &hivev1.Drbd{Name: "r6", Minor: 6, Disk: "/dev/vdc", MetaDisk: "/dev/vdd", Port: 7800, Protocol: "B", PeerRole: "storage",
		Peers: []*hivev1.DrbdPeer{{Name: "v6a", Address: "fd78::1"}, {Name: "v6b", Address: "fd78::2"}}}},
}

func TestRenderGolden(t *testing.T) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Check(tc.d, tc.d.Peers[0].Name)
			if err != nil {
				t.Fatal(err)
			}
			got := s.Render()
			golden := filepath.Join("testdata", tc.name+".res")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update)", err)
			}
			if got != string(want) {
				t.Errorf("rendered:\n%s\nwant (%s):\n%s", got, golden, want)
			}
			if fi, ok := parseHiveFile(got); !ok || fi.name != tc.d.Name || uint32(fi.port) != tc.d.Port || fi.minor != tc.d.Minor {
				t.Errorf("hive line not parsed back: %+v %v", fi, ok)
			}
		})
	}
}

// TestRenderedByRealParser feeds every golden resource to drbd-utils'
// parser (drbdadm dump) and to drbdadm -d adjust as each of its peers.
func TestRenderedByRealParser(t *testing.T) {
	drbdadm := testenv.RequireTool(t, "drbdadm")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Check(tc.d, tc.d.Peers[0].Name)
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(t.TempDir(), tc.d.Name+".res")
			if err := os.WriteFile(file, []byte(s.Render()), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, self := range s.Peers {
				cmd := exec.Command(drbdadm, "-c", file, "dump", tc.d.Name)
				cmd.Env = append(os.Environ(), "__DRBD_NODE__="+self.Name)
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("drbdadm dump as %s: %v\n%s", self.Name, err, out)
				}
				for _, p := range s.Peers {
					if !strings.Contains(string(out), "on "+p.Name+" {") {
						t.Errorf("dump lacks host %s:\n%s", p.Name, out)
					}
				}
				cmd = exec.Command(drbdadm, "-c", file, "-d", "adjust", tc.d.Name)
				cmd.Env = append(os.Environ(), "__DRBD_NODE__="+self.Name)
				stdout, err := cmd.Output()
				if err != nil {
					t.Fatalf("drbdadm -d adjust as %s: %v", self.Name, err)
				}
				plan := strings.ReplaceAll(string(stdout), `\`, "") // drbdadm shell-quotes brackets
				if !strings.Contains(plan, "new-minor "+tc.d.Name+" "+itoa(tc.d.Minor)) {
					t.Errorf("adjust as %s lacks new-minor:\n%s", self.Name, plan)
				}
				for _, p := range s.Peers {
					if p.Name == self.Name {
						continue
					}
					if !strings.Contains(plan, "--_name="+p.Name) || !strings.Contains(plan, addrArg(p, s.Port)) {
						t.Errorf("adjust as %s lacks peer %s (%s):\n%s", self.Name, p.Name, addrArg(p, s.Port), plan)
					}
				}
				if !strings.Contains(plan, "--protocol="+s.Protocol) {
					t.Errorf("adjust lacks protocol %s:\n%s", s.Protocol, plan)
				}
				if v, ok := tc.d.Options["net/verify-alg"]; ok && !strings.Contains(plan, "--verify-alg="+v) {
					t.Errorf("adjust lacks verify-alg:\n%s", plan)
				}
			}
		})
	}
}

func addrArg(p Peer, port uint16) string {
	if p.Addr.Is4() {
		return "ipv4:" + p.Addr.String() + ":" + itoa(uint32(port))
	}
	return "ipv6:[" + p.Addr.String() + "]:" + itoa(uint32(port))
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

func TestCheckErrors(t *testing.T) {
	base := func() *hivev1.Drbd {
		return &hivev1.Drbd{Name: "r0", Disk: "/dev/vdb", Port: 7789, PeerRole: "storage", Peers: peers("a", "b")}
	}
	tests := []struct {
		name string
		mod  func(*hivev1.Drbd)
		self string
		want error
		msg  string
	}{
		{"not a member", func(d *hivev1.Drbd) {}, "c", ErrNotMember, `this node "c" is not among the peers [a b] of drbd r0`},
		{"peer without address", func(d *hivev1.Drbd) { d.Peers[1].Address = "" }, "a", ErrNotMember, "peer b has no address"},
		{"one peer", func(d *hivev1.Drbd) { d.Peers = d.Peers[:1] }, "a", ErrNotMember, `needs at least two peers holding role "storage", has 1 [a]`},
		{"bad name", func(d *hivev1.Drbd) { d.Name = "r 0" }, "a", ErrInvalid, `name "r 0"`},
		{"relative disk", func(d *hivev1.Drbd) { d.Disk = "vdb" }, "a", ErrInvalid, `disk "vdb"`},
		{"no port", func(d *hivev1.Drbd) { d.Port = 0 }, "a", ErrInvalid, "port 0"},
		{"protocol", func(d *hivev1.Drbd) { d.Protocol = "D" }, "a", ErrInvalid, `protocol "D"`},
		{"bad option section", func(d *hivev1.Drbd) { d.Options = map[string]string{"global/x": "1"} }, "a", ErrInvalid, `option "global/x"`},
		{"option injection", func(d *hivev1.Drbd) { d.Options = map[string]string{"net/verify-alg": "sha256; }"} }, "a", ErrInvalid, "value"},
		{"bad address", func(d *hivev1.Drbd) { d.Peers[0].Address = "store-a.example" }, "a", ErrInvalid, "is not an IP address"},
		{"duplicate node id", func(d *hivev1.Drbd) { d.Peers[0].NodeId = 1; d.Peers[1].NodeId = 1 }, "a", ErrInvalid, "share node id 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := base()
			tt.mod(d)
			_, err := Check(d, tt.self)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("err = %v, want %v containing %q", err, tt.want, tt.msg)
			}
		})
	}
}

func FuzzParseHiveFile(f *testing.F) {
	s, _ := Check(cases[0].d, "store-a")
	f.Add(s.Render())
	f.Add(Header + "\n# hive: resource=x port=99999 minor=1\n")
	f.Fuzz(func(t *testing.T, text string) {
		fi, ok := parseHiveFile(text)
		if ok && (fi.name == "" || !strings.HasPrefix(text, Header)) {
			t.Fatalf("accepted %q as %+v", text, fi)
		}
	})
}
