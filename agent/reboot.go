package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/internal/atomicfile"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Coordinated reboots, the agent's part (docs/operations.md, "Reboots").
//
// Every report carries the agent's boot id: the kernel's boot_id, and with
// Config.RebootCommand set (a hook replacing `systemctl reboot`, e.g. one
// that restarts the node's processes in tests) also the agent's start
// time, so a restart of the agent counts as the node coming back. The
// coordinators compare it with the one they recorded when they ordered the
// reboot.
//
// A RebootOrder (sent on the watch stream while the node holds the fleet
// reboot lock) is executed once per id, remembered in DataDir/reboot.json
// before anything is done: the node's DRBD resources are made secondary
// (`drbdadm secondary`; only logged under a sandbox root), then the reboot
// command runs.
//
// A resource that changed and notifies "reboot" (converge.NotifyReboot)
// marks this boot as needing a reboot (remembered in the same file); the
// reports say so (reboot_required) until the boot id changes, and the
// leader queues the node.

// DefaultRebootCommand is what a reboot order runs without
// Config.RebootCommand.
var DefaultRebootCommand = []string{"systemctl", "reboot"}

// rebootFile is the agent's reboot memory below DataDir.
const rebootFile = "reboot.json"

type rebootMemo struct {
	// DoneOrder is the highest reboot order id executed.
	DoneOrder uint64 `json:"done_order"`
	// RequiredBoot is the boot id in which a resource notified reboot.
	RequiredBoot string `json:"required_boot,omitempty"`
}

// rebooter holds the agent's boot id and its reboot memory.
type rebooter struct {
	bootID  string
	path    string
	sandbox bool // Config.sandbox: reported, no built-in checks run

	mu   sync.Mutex
	memo rebootMemo
}

func newRebooter(cfg Config, start time.Time) (*rebooter, error) {
	r := &rebooter{path: filepath.Join(cfg.DataDir, rebootFile), sandbox: cfg.sandbox()}
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	r.bootID = strings.TrimSpace(string(b))
	if err != nil || r.bootID == "" || len(cfg.RebootCommand) > 0 {
		// Without a kernel boot id, the agent's start stands for the boot.
		r.bootID += "/" + strconv.FormatInt(start.UnixNano(), 10)
	}
	data, err := os.ReadFile(r.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", r.path, err)
	default:
		if err := json.Unmarshal(data, &r.memo); err != nil {
			return nil, fmt.Errorf("%s: %w", r.path, err)
		}
	}
	return r, nil
}

// saveLocked writes the memo. Callers hold r.mu.
func (r *rebooter) saveLocked() error {
	data, err := json.Marshal(r.memo)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(r.path, data, 0o600)
}

// stamp sets the report's boot id, reboot_required and sandbox.
func (r *rebooter) stamp(rep *hivev1.Report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep.BootId = r.bootID
	rep.RebootRequired = r.memo.RequiredBoot == r.bootID
	rep.Sandbox = r.sandbox
}

// noteRun remembers that this boot needs a reboot when a resource that
// really changed (not only planned) notified reboot.
func (r *rebooter) noteRun(rep *converge.Report, results []*hivev1.ResourceResult) error {
	changed := map[string]bool{}
	for _, x := range results {
		if x.GetOutcome() == hivev1.Outcome_OUTCOME_CHANGED {
			changed[x.GetKey()] = true
		}
	}
	want := false
	for _, n := range rep.GetNotifications() {
		if n.To == converge.NotifyReboot && changed[n.From] {
			want = true
		}
	}
	if !want {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.memo.RequiredBoot == r.bootID {
		return nil
	}
	r.memo.RequiredBoot = r.bootID
	return r.saveLocked()
}

// claim records order id as executed; false when it (or a later one) was
// already.
func (r *rebooter) claim(id uint64) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id <= r.memo.DoneOrder {
		return false, nil
	}
	r.memo.DoneOrder = id
	return true, r.saveLocked()
}

// rebootTimeout bounds the DRBD demotion and the reboot command.
const rebootTimeout = 2 * time.Minute

// reboot executes a reboot order (from the watch goroutine; it runs in its
// own goroutine so the stream goes on).
func (a *Agent) reboot(ctx context.Context, o *hivev1.RebootOrder) {
	ok, err := a.reboots.claim(o.GetId())
	if err != nil {
		a.log.Error("cannot record the reboot order; not rebooting", "id", o.GetId(), "err", err)
		return
	}
	if !ok {
		a.log.Debug("reboot order already executed", "id", o.GetId())
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rebootTimeout)
		defer cancel()
		a.log.Info("reboot ordered by the coordinators", "id", o.GetId())
		for _, name := range drbdNames(a.current()) {
			if a.cfg.sandbox() {
				a.log.Info("sandbox: would make DRBD resource secondary", "resource", name)
				continue
			}
			if out, err := exec.CommandContext(ctx, "drbdadm", "secondary", name).CombinedOutput(); err != nil {
				// The shutdown demotes it too; say so and go on.
				a.log.Warn("drbdadm secondary failed before the reboot", "resource", name, "err", err, "output", strings.TrimSpace(string(out)))
			}
		}
		argv := DefaultRebootCommand
		if len(a.cfg.RebootCommand) > 0 {
			argv = a.cfg.RebootCommand
		}
		a.log.Info("rebooting", "command", argv)
		if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
			a.log.Error("reboot command failed", "command", argv, "err", err, "output", strings.TrimSpace(string(out)))
		}
	}()
}

// drbdNames lists the DRBD resources of st.
func drbdNames(st *hivev1.NodeState) []string {
	var out []string
	for _, r := range st.GetResources() {
		if d := r.GetDrbd(); d != nil {
			out = append(out, d.GetName())
		}
	}
	return out
}
