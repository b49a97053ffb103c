package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/converge"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestRebooter: reboot orders run once per id across restarts; a resource
// that really changed and notifies reboot marks this boot (reported until
// the boot id changes), a planned one does not; with a reboot hook a new
// start of the agent is a new boot.
func TestRebooter(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{DataDir: dir, RebootCommand: []string{"true"}}
	start := time.Unix(1700000000, 0)
	r, err := newRebooter(cfg, start)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(r.bootID, "/1700000000000000000") {
		t.Fatalf("boot id with a hook %q", r.bootID)
	}
	if ok, err := r.claim(7); !ok || err != nil {
		t.Fatalf("first claim: %v %v", ok, err)
	}
	planned := &converge.Report{Notifications: []converge.Notification{{From: "file:/boot/x", To: converge.NotifyReboot}}}
	if err := r.noteRun(planned, []*hivev1.ResourceResult{{Key: "file:/boot/x", Outcome: hivev1.Outcome_OUTCOME_PLANNED}}); err != nil {
		t.Fatal(err)
	}
	var rep hivev1.Report
	r.stamp(&rep)
	if rep.GetRebootRequired() || rep.GetBootId() != r.bootID {
		t.Fatalf("after a planned change: %v", &rep)
	}
	if err := r.noteRun(planned, []*hivev1.ResourceResult{{Key: "file:/boot/x", Outcome: hivev1.Outcome_OUTCOME_CHANGED}}); err != nil {
		t.Fatal(err)
	}
	r.stamp(&rep)
	if !rep.GetRebootRequired() {
		t.Fatal("a changed resource notifying reboot is not reported")
	}

	// The agent starts again (the hook restarted it): order 7 is not run
	// again, the reboot is no longer required.
	r2, err := newRebooter(cfg, start.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := r2.claim(7); ok {
		t.Fatal("order 7 claimed twice")
	}
	if ok, _ := r2.claim(9); !ok {
		t.Fatal("order 9 not claimed")
	}
	var rep2 hivev1.Report
	r2.stamp(&rep2)
	if rep2.GetRebootRequired() || rep2.GetBootId() == rep.GetBootId() {
		t.Fatalf("after the restart: %v (before %v)", &rep2, &rep)
	}

	// Without a hook the kernel's boot id alone: a restart is not a boot.
	r3, err := newRebooter(Config{DataDir: t.TempDir()}, start)
	if err != nil {
		t.Fatal(err)
	}
	r4, _ := newRebooter(Config{DataDir: t.TempDir()}, start.Add(time.Hour))
	if r3.bootID == "" || r3.bootID != r4.bootID || strings.Contains(r3.bootID, "/") {
		t.Fatalf("kernel boot ids %q %q", r3.bootID, r4.bootID)
	}
}
