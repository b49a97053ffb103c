package drbd

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// TestExampleSite renders the DRBD resources of the example site
// (deploy/examples/site.yaml) with two peers filled in as the coordinator
// would, and has drbdadm parse them when it is installed.
func TestExampleSite(t *testing.T) {
	data, err := os.ReadFile("../../deploy/examples/site.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := site.Parse("site.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, role := range s.GetRoles() {
		for _, r := range role.GetResources() {
			d := r.GetDrbd()
			if d == nil {
				continue
			}
			d.Peers = []*hivev1.DrbdPeer{{Name: "db-1", Address: "10.0.0.11", NodeId: 0}, {Name: "db-2", Address: "10.0.0.12", NodeId: 1}}
			spec, err := Check(d, "db-1")
			if err != nil {
				t.Fatalf("%s: %v", r.GetKey(), err)
			}
			if drbdadm, err := exec.LookPath("drbdadm"); err == nil {
				f := filepath.Join(t.TempDir(), d.GetName()+".res")
				if err := os.WriteFile(f, []byte(spec.Render()), 0o644); err != nil {
					t.Fatal(err)
				}
				cmd := exec.Command(drbdadm, "-c", f, "dump", d.GetName())
				cmd.Env = append(os.Environ(), "__DRBD_NODE__=db-1")
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("drbdadm dump %s: %v\n%s", d.GetName(), err, out)
				}
			}
			n++
		}
	}
	if n == 0 {
		t.Fatal("the example site declares no drbd resource")
	}
}
