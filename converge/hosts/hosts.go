// Package hosts is the converge provider of the "hosts" kind: hive's
// block in /etc/hosts.
//
// The block is the lines between "# BEGIN hive (hosts:block)" and
// "# END hive (hosts:block)"; lines outside it are never changed. It is
// replaced in place, or appended at the end of the file when absent. Each
// entry is one line, "ADDRESS<TAB>NAME…"; entries of one address are
// joined (names in order, without repeats). Entries from fleet membership
// (from_roles) arrive resolved by the coordinator's renderer (one line per
// node of the roles: its trusted address and name), so the provider only
// writes what the state says. The file is written through the file
// provider (atomic, confined to the root, 0644 root:root), so a plan is its
// unified diff. A begin marker without an end marker (or the reverse) is
// an error: hive never guesses which lines are its own.
//
// Prune removes the block when the node has no hosts resource any more.
// With a confirm window (`confirm:`), the snapshot is the block alone, so a
// rollback puts back hive's old block (or removes it) and keeps what was
// edited outside it meanwhile.
// The engine calls one method at a time; everything blocks on disk I/O.
package hosts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/file"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// Kind is the provider's kind.
const Kind = "hosts"

// Path is the file managed.
const Path = "/etc/hosts"

// The block's markers.
const (
	Begin = "# BEGIN hive (hosts:block): managed by hive, edits inside are overwritten"
	End   = "# END hive (hosts:block)"
)

// Provider converges the hosts block.
type Provider struct{ files *file.Provider }

// New returns the provider.
func New() *Provider { return &Provider{files: file.New()} }

var (
	_ converge.Provider    = (*Provider)(nil)
	_ converge.Validator   = (*Provider)(nil)
	_ converge.Pruner      = (*Provider)(nil)
	_ converge.Snapshotter = (*Provider)(nil)
)

// Kind implements converge.Provider.
func (*Provider) Kind() string { return Kind }

// Validate implements converge.Validator with the site's rules.
func (*Provider) Validate(r *hivev1.Resource) error {
	h := r.GetHosts()
	if h == nil {
		return fmt.Errorf("%w: not a hosts resource", converge.ErrInvalid)
	}
	if len(h.GetFromRoles()) > 0 {
		return fmt.Errorf("%w: from_roles %v not resolved by the coordinator", converge.ErrInvalid, h.GetFromRoles())
	}
	for _, e := range h.GetEntries() {
		if err := site.CheckHostAddress(e.GetAddress()); err != nil {
			return fmt.Errorf("%w: %w", converge.ErrInvalid, err)
		}
		if len(e.GetNames()) == 0 {
			return fmt.Errorf("%w: entry %s has no names", converge.ErrInvalid, e.GetAddress())
		}
		for _, n := range e.GetNames() {
			if err := site.CheckHostName(n, 0); err != nil {
				return fmt.Errorf("%w: %w", converge.ErrInvalid, err)
			}
		}
	}
	return nil
}

// Block returns the lines of the block for entries, markers included.
func Block(entries []*hivev1.Hosts_Entry) []string {
	var order []string
	names := map[string][]string{}
	seen := map[string]bool{}
	for _, e := range entries {
		a := e.GetAddress()
		if _, ok := names[a]; !ok {
			order = append(order, a)
			names[a] = nil
		}
		for _, n := range e.GetNames() {
			if !seen[a+" "+n] {
				seen[a+" "+n] = true
				names[a] = append(names[a], n)
			}
		}
	}
	out := []string{Begin}
	for _, a := range order {
		out = append(out, a+"\t"+strings.Join(names[a], " "))
	}
	return append(out, End)
}

// splice returns content with its block replaced by block (nil: removed),
// or appended when it has none.
func splice(content string, block []string) (string, error) {
	lines := strings.Split(strings.TrimSuffix(content, "\n"), "\n")
	if content == "" {
		lines = nil
	}
	begin, end := -1, -1
	for i, l := range lines {
		switch strings.TrimSpace(l) {
		case Begin:
			if begin >= 0 {
				return "", fmt.Errorf("%s has two hive begin markers (lines %d and %d): fix it by hand", Path, begin+1, i+1)
			}
			begin = i
		case End:
			if end >= 0 {
				return "", fmt.Errorf("%s has two hive end markers (lines %d and %d): fix it by hand", Path, end+1, i+1)
			}
			end = i
		}
	}
	switch {
	case begin < 0 && end >= 0:
		return "", fmt.Errorf("%s has a hive end marker at line %d without a begin marker: fix it by hand", Path, end+1)
	case begin >= 0 && end < 0:
		return "", fmt.Errorf("%s has a hive begin marker at line %d without an end marker: fix it by hand", Path, begin+1)
	case begin > end:
		return "", fmt.Errorf("%s has the hive end marker (line %d) before the begin marker (line %d): fix it by hand", Path, end+1, begin+1)
	}
	var out []string
	if begin >= 0 {
		out = append(append(append(out, lines[:begin]...), block...), lines[end+1:]...)
	} else {
		out = append(lines, block...)
	}
	if len(out) == 0 {
		return "", nil
	}
	return strings.Join(out, "\n") + "\n", nil
}

// read returns env's /etc/hosts (nothing when there is none).
func read(env *converge.Env) ([]byte, error) {
	hp, err := env.Path(Path)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(hp)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return b, nil
}

// sub carries the file change from Plan to Apply.
type sub struct{ change *converge.Change }

// plan returns the change writing block (nil: removing it) into env's
// /etc/hosts, nil when nothing is needed.
func (p *Provider) plan(ctx context.Context, env *converge.Env, key string, block []string) (*converge.Change, error) {
	b, err := read(env)
	if err != nil {
		return nil, err
	}
	if block == nil && !strings.Contains(string(b), Begin) {
		return nil, nil
	}
	want, err := splice(string(b), block)
	if err != nil {
		return nil, err
	}
	fr := &hivev1.Resource{Key: converge.KindFile + ":" + Path, Kind: &hivev1.Resource_File{File: &hivev1.File{
		Path: Path, Content: want, Mode: 0o644, Owner: "root", Group: "root", State: hivev1.FileState_FILE_STATE_FILE}}}
	fchs, err := p.files.Plan(ctx, env, &converge.Batch{Items: []converge.Item{{Key: fr.Key, Resource: fr}}, Changed: map[string]bool{}})
	if err != nil {
		return nil, err
	}
	fc := fchs[0]
	fc.Key, fc.Resource = fr.Key, fr
	if fc.Err != nil {
		return nil, fc.Err
	}
	if !fc.Needed {
		return nil, nil
	}
	c := &converge.Change{Key: key, Needed: true, Data: &sub{change: fc}, Diff: fc.Diff}
	c.Summary = "write the hive block of " + Path + ": " + fc.Summary
	if block == nil {
		c.Summary = "remove the hive block of " + Path + " (no hosts resource any more)"
	}
	return c, nil
}

// Plan implements converge.Provider.
func (p *Provider) Plan(ctx context.Context, env *converge.Env, b *converge.Batch) ([]*converge.Change, error) {
	out := make([]*converge.Change, 0, len(b.Items))
	for _, it := range b.Items {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c, err := p.plan(ctx, env, it.Key, Block(it.Resource.GetHosts().GetEntries()))
		switch {
		case err != nil:
			c = &converge.Change{Err: err}
		case c == nil:
			c = &converge.Change{}
		}
		c.Key, c.Resource = it.Key, it.Resource
		out = append(out, c)
	}
	return out, nil
}

// Apply implements converge.Provider.
func (p *Provider) Apply(ctx context.Context, env *converge.Env, changes []*converge.Change) error {
	for _, c := range changes {
		s, ok := c.Data.(*sub)
		if !ok {
			c.Err = errors.New("hosts: change without plan data")
			continue
		}
		if err := p.files.Apply(ctx, env, []*converge.Change{s.change}); err != nil {
			return err
		}
		c.Err = s.change.Err
	}
	return nil
}

// Prune implements converge.Pruner: the block is removed when no hosts
// resource is present.
func (p *Provider) Prune(ctx context.Context, env *converge.Env, present []converge.Item) ([]*converge.Change, error) {
	if len(present) > 0 {
		return nil, nil
	}
	c, err := p.plan(ctx, env, Kind+":block", nil)
	if err != nil || c == nil {
		return nil, err
	}
	return []*converge.Change{c}, nil
}

// snapshot is the block before a change with a confirm window: its entry
// lines, markers excluded, or Absent when the file had no block.
type snapshot struct {
	Absent bool     `json:"absent,omitempty"`
	Lines  []string `json:"lines,omitempty"`
}

// Snapshot implements converge.Snapshotter: the block as it is now.
func (p *Provider) Snapshot(ctx context.Context, env *converge.Env, r *hivev1.Resource) ([]byte, error) {
	b, err := read(env)
	if err != nil {
		return nil, err
	}
	block, err := current(string(b))
	if err != nil {
		return nil, err
	}
	if block == nil {
		return json.Marshal(snapshot{Absent: true})
	}
	return json.Marshal(snapshot{Lines: block[1 : len(block)-1]})
}

// Restore implements converge.Snapshotter: the block of the snapshot is
// written back in place (or removed), the lines outside it untouched; an
// unchanged block is not rewritten.
func (p *Provider) Restore(ctx context.Context, env *converge.Env, r *hivev1.Resource, snap []byte) error {
	var s snapshot
	if err := json.Unmarshal(snap, &s); err != nil {
		return fmt.Errorf("bad snapshot: %w", err)
	}
	var block []string
	if !s.Absent {
		block = append(append([]string{Begin}, s.Lines...), End)
	}
	c, err := p.plan(ctx, env, r.GetKey(), block)
	if err != nil || c == nil {
		return err
	}
	c.Key, c.Resource = r.GetKey(), r
	if err := p.Apply(ctx, env, []*converge.Change{c}); err != nil {
		return err
	}
	return c.Err
}

// current returns the block of content, markers included, or nil when it
// has none (the markers' errors are splice's).
func current(content string) ([]string, error) {
	if _, err := splice(content, nil); err != nil {
		return nil, err
	}
	lines := strings.Split(content, "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) != Begin {
			continue
		}
		for j := i + 1; j < len(lines); j++ {
			if strings.TrimSpace(lines[j]) == End {
				return lines[i : j+1], nil
			}
		}
	}
	return nil, nil
}
