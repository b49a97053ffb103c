// Package convergetest is the conformance suite every converge provider
// runs against its real tool: a timeline from empty, no-op, drift,
// reconverge and remove, checking on the way that plan mode never touches
// the host (a fingerprint of the root is compared around every Plan) and
// that a cancelled context is honoured.
//
// It also has a recording Runner for unit tests around command lines.
// It is imported by tests only.
package convergetest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hivefleet/hive/converge"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Timeline describes one provider's conformance run.
type Timeline struct {
	Provider converge.Provider
	// Env returns the environment to run in (Root is the sandbox).
	Env *converge.Env
	// Desired is the batch converged from empty.
	Desired []*hivev1.Resource
	// Check asserts, with the real tool, that Desired holds.
	Check func(t *testing.T)
	// Drift changes the machine behind the provider's back (optional).
	Drift func(t *testing.T)
	// Removed is the batch that takes the resources away (optional).
	Removed []*hivev1.Resource
	// CheckRemoved asserts that Removed holds.
	CheckRemoved func(t *testing.T)
	// Fingerprint returns a fingerprint of the machine state, compared
	// around every Plan; default: Tree(Env.Root).
	Fingerprint func(t *testing.T) string
}

// Run runs the timeline as subtests, in order; a failed step stops it.
func Run(t *testing.T, tl Timeline) {
	t.Helper()
	if tl.Fingerprint == nil {
		tl.Fingerprint = func(t *testing.T) string { return Tree(t, tl.Env.Root) }
	}
	if tl.Env.Logger == nil {
		tl.Env.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	steps := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"cancelled", func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			before := tl.Fingerprint(t)
			chs, err := tl.Provider.Plan(ctx, tl.Env, batch(tl.Desired, nil))
			if err == nil {
				for _, c := range chs {
					if c.Err == nil {
						t.Fatalf("plan with cancelled context succeeded for %s", c.Key)
					}
				}
			}
			if after := tl.Fingerprint(t); after != before {
				t.Fatalf("plan with cancelled context changed the machine:\n%s", FingerprintDiff(before, after))
			}
		}},
		{"from-empty", func(t *testing.T) {
			ConvergeFP(t, tl.Provider, tl.Env, tl.Desired, nil, len(tl.Desired), tl.Fingerprint)
			tl.Check(t)
		}},
		{"no-op", func(t *testing.T) {
			ConvergeFP(t, tl.Provider, tl.Env, tl.Desired, nil, 0, tl.Fingerprint)
			tl.Check(t)
		}},
		{"drift-reconverge", func(t *testing.T) {
			if tl.Drift == nil {
				t.Skip("provider has no drift step")
			}
			tl.Drift(t)
			if n := ConvergeFP(t, tl.Provider, tl.Env, tl.Desired, nil, -1, tl.Fingerprint); n == 0 {
				t.Fatal("drift not detected: no change needed")
			}
			tl.Check(t)
			ConvergeFP(t, tl.Provider, tl.Env, tl.Desired, nil, 0, tl.Fingerprint)
		}},
		{"remove", func(t *testing.T) {
			if tl.Removed == nil {
				t.Skip("provider has no remove step")
			}
			ConvergeFP(t, tl.Provider, tl.Env, tl.Removed, nil, -1, tl.Fingerprint)
			tl.CheckRemoved(t)
			ConvergeFP(t, tl.Provider, tl.Env, tl.Removed, nil, 0, tl.Fingerprint)
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) {
			s.fn(t)
		}) {
			return
		}
	}
	_ = tl
}

func batch(rs []*hivev1.Resource, changed map[string]bool) *converge.Batch {
	b := &converge.Batch{Changed: changed}
	if b.Changed == nil {
		b.Changed = map[string]bool{}
	}
	for _, r := range rs {
		b.Items = append(b.Items, converge.Item{Key: r.GetKey(), Resource: r})
	}
	return b
}

// Converge plans rs (checking that planning leaves the machine untouched),
// applies the needed changes, fails t on any resource error, and returns
// how many changes were needed. wantNeeded >= 0 asserts that count.
func Converge(t *testing.T, p converge.Provider, env *converge.Env, rs []*hivev1.Resource, changed map[string]bool, wantNeeded int) int {
	t.Helper()
	return ConvergeFP(t, p, env, rs, changed, wantNeeded, nil)
}

// ConvergeFP is Converge with a fingerprint of the machine compared around
// Plan (nil: Tree of env.Root).
func ConvergeFP(t *testing.T, p converge.Provider, env *converge.Env, rs []*hivev1.Resource, changed map[string]bool, wantNeeded int, fp func(*testing.T) string) int {
	t.Helper()
	chs, needed := PlanOnlyFP(t, p, env, rs, changed, fp)
	if wantNeeded >= 0 && len(needed) != wantNeeded {
		t.Fatalf("plan: %d changes needed, want %d:\n%s", len(needed), wantNeeded, Describe(chs))
	}
	if len(needed) == 0 {
		return 0
	}
	if err := p.Apply(context.Background(), env, needed); err != nil {
		t.Fatalf("apply: %v", err)
	}
	for _, c := range needed {
		if c.Err != nil {
			t.Fatalf("apply %s: %v", c.Key, c.Err)
		}
	}
	return len(needed)
}

// PlanOnly plans rs, asserts the machine did not change, fails t on plan
// errors, and returns all changes and the needed ones.
func PlanOnly(t *testing.T, p converge.Provider, env *converge.Env, rs []*hivev1.Resource, changed map[string]bool) (all, needed []*converge.Change) {
	t.Helper()
	return PlanOnlyFP(t, p, env, rs, changed, nil)
}

// PlanOnlyFP is PlanOnly with a fingerprint of the machine (nil: Tree of
// env.Root).
func PlanOnlyFP(t *testing.T, p converge.Provider, env *converge.Env, rs []*hivev1.Resource, changed map[string]bool, fp func(*testing.T) string) (all, needed []*converge.Change) {
	t.Helper()
	if fp == nil {
		fp = func(t *testing.T) string { return Tree(t, env.Root) }
	}
	before := fp(t)
	b := batch(rs, changed)
	chs, err := p.Plan(context.Background(), env, b)
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	if after := fp(t); after != before {
		t.Fatalf("plan changed the machine:\n%s", FingerprintDiff(before, after))
	}
	if len(chs) != len(rs) {
		t.Fatalf("plan returned %d changes for %d resources", len(chs), len(rs))
	}
	for i, c := range chs {
		c.Key, c.Resource = rs[i].GetKey(), rs[i]
		if c.Err != nil {
			t.Fatalf("plan %s: %v", c.Key, c.Err)
		}
		if c.Needed {
			needed = append(needed, c)
		}
	}
	return chs, needed
}

// Describe renders changes for failure messages.
func Describe(chs []*converge.Change) string {
	var b strings.Builder
	for _, c := range chs {
		fmt.Fprintf(&b, "  %s needed=%v err=%v %s\n%s", c.Key, c.Needed, c.Err, c.Summary, c.Diff)
	}
	return b.String()
}

// Tree returns a fingerprint of every entry under root: path, type, mode,
// owner, size, mtime and ctime (so content changes, chmod and chown all
// show). /proc, /sys and /dev below root are not walked; SQLite -shm and
// -wal files count by existence only.
func Tree(t testing.TB, root string) string {
	t.Helper()
	if root == "" || root == "/" {
		t.Fatal("convergetest: refusing to fingerprint the host root")
	}
	var lines []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() && (rel == "proc" || rel == "sys" || rel == "dev") {
			return filepath.SkipDir
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if strings.HasSuffix(rel, "-shm") || strings.HasSuffix(rel, "-wal") {
			// SQLite (the rpm database) rewrites its shared-memory and
			// write-ahead-log files on every read; only their existence
			// counts.
			lines = append(lines, rel)
			return nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		lines = append(lines, fmt.Sprintf("%s %v %d:%d %d %d %d", rel, fi.Mode(), st.Uid, st.Gid, fi.Size(), st.Mtim.Nano(), st.Ctim.Nano()))
		return nil
	})
	if err != nil {
		t.Fatalf("fingerprint %s: %v", root, err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// FingerprintDiff lists the lines that differ between two fingerprints.
func FingerprintDiff(a, b string) string {
	in := map[string]int{}
	for _, l := range strings.Split(a, "\n") {
		in[l]--
	}
	for _, l := range strings.Split(b, "\n") {
		in[l]++
	}
	var out []string
	for l, n := range in {
		switch {
		case n < 0:
			out = append(out, "- "+l)
		case n > 0:
			out = append(out, "+ "+l)
		}
	}
	sort.Strings(out)
	if len(out) > 40 {
		out = append(out[:40], fmt.Sprintf("… %d more", len(out)-40))
	}
	return strings.Join(out, "\n")
}

// Hash is a short sha256 of s, for fingerprints of tool output.
func Hash(s string) string { return fmt.Sprintf("%x", sha256.Sum256([]byte(s)))[:16] }

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Recorder is a converge.Runner that records every command and answers
// with Reply (or an empty success).
type Recorder struct {
	mu    sync.Mutex
	Cmds  []converge.Cmd
	Reply func(c converge.Cmd) (converge.Output, error)
}

// Run implements converge.Runner.
func (r *Recorder) Run(ctx context.Context, c converge.Cmd) (converge.Output, error) {
	r.mu.Lock()
	r.Cmds = append(r.Cmds, c)
	reply := r.Reply
	r.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return converge.Output{}, err
	}
	if reply != nil {
		return reply(c)
	}
	return converge.Output{}, nil
}

// Lines returns the recorded commands, one string each.
func (r *Recorder) Lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.Cmds))
	for i, c := range r.Cmds {
		out[i] = c.String()
	}
	return out
}
