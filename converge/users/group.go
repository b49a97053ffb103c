package users

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/hivefleet/hive/converge"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// KindGroup is the kind of GroupProvider.
const KindGroup = "group"

var groupLedger = ledger{path: "/var/lib/hive/groups.json"}

// GroupProvider converges "group:" resources.
type GroupProvider struct{}

// NewGroups returns the group provider.
func NewGroups() *GroupProvider { return &GroupProvider{} }

var (
	_ converge.Provider  = (*GroupProvider)(nil)
	_ converge.Validator = (*GroupProvider)(nil)
	_ converge.Linker    = (*GroupProvider)(nil)
	_ converge.Pruner    = (*GroupProvider)(nil)
)

// Kind implements converge.Provider.
func (*GroupProvider) Kind() string { return KindGroup }

// Validate implements converge.Validator with the site's rules.
func (*GroupProvider) Validate(r *hivev1.Resource) error {
	g := r.GetGroup()
	if g == nil {
		return fmt.Errorf("%w: not a group resource", converge.ErrInvalid)
	}
	if err := site.CheckAccountName("group", g.GetName()); err != nil {
		return fmt.Errorf("%w: %w", converge.ErrInvalid, err)
	}
	for _, rule := range g.GetSudo() {
		if err := site.CheckSudoRule(rule); err != nil {
			return fmt.Errorf("%w: %w", converge.ErrInvalid, err)
		}
	}
	return nil
}

// Requires implements converge.Linker: sudo rules need the sudo package.
func (*GroupProvider) Requires(r *hivev1.Resource, _ []*hivev1.Resource) []string {
	if len(r.GetGroup().GetSudo()) > 0 {
		return []string{converge.KindPackage + ":sudo"}
	}
	return nil
}

// groupPlan is what Apply does for one group.
type groupPlan struct {
	name   string
	create []string // groupadd arguments
	modify []string // groupmod arguments
	del    bool
	sudo   *sudoPlan
	// forget: take the name out of the ledger (it left the state).
	forget bool
}

// sudoPlan replaces (or, content nil, removes) a drop-in.
type sudoPlan struct {
	path    string
	content []byte
}

// Plan implements converge.Provider.
func (p *GroupProvider) Plan(ctx context.Context, env *converge.Env, b *converge.Batch) ([]*converge.Change, error) {
	d, err := loadDB(env)
	if err != nil {
		return nil, err
	}
	out := make([]*converge.Change, 0, len(b.Items))
	for _, it := range b.Items {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c := &converge.Change{Key: it.Key, Resource: it.Resource}
		out = append(out, c)
		gp, sums, err := planGroup(ctx, env, d, it.Key, it.Resource.GetGroup())
		if err != nil {
			c.Err = err
			continue
		}
		if len(sums) > 0 {
			c.Needed, c.Data, c.Summary = true, gp, strings.Join(sums, "; ")
			c.Diff = strings.Join(sums, "\n") + "\n"
		}
	}
	return out, nil
}

func planGroup(ctx context.Context, env *converge.Env, d *db, key string, g *hivev1.Group) (*groupPlan, []string, error) {
	gp := &groupPlan{name: g.GetName()}
	var sums []string
	cur, exists := d.groups[g.GetName()]
	switch {
	case g.GetAbsent():
		if exists {
			if users := primaryOf(d, cur.gid); len(users) > 0 {
				return nil, nil, fmt.Errorf("cannot delete group %s: it is the primary group of %s", g.GetName(), strings.Join(users, ", "))
			}
			gp.del = true
			sums = append(sums, "delete group "+g.GetName())
		}
	case !exists:
		args := []string{}
		if g.Gid != nil {
			if other, used := d.gids[g.GetGid()]; used {
				return nil, nil, fmt.Errorf("gid %d is already used by group %s", g.GetGid(), other)
			}
			args = append(args, "--gid", strconv.FormatUint(uint64(g.GetGid()), 10))
		}
		if g.GetSystem() {
			args = append(args, "--system")
		}
		gp.create = append(args, g.GetName())
		s := "create group " + g.GetName()
		if g.Gid != nil {
			s += fmt.Sprintf(" (gid %d)", g.GetGid())
		}
		sums = append(sums, s)
	case g.Gid != nil && cur.gid != g.GetGid():
		if other, used := d.gids[g.GetGid()]; used && other != g.GetName() {
			return nil, nil, fmt.Errorf("gid %d is already used by group %s", g.GetGid(), other)
		}
		gp.modify = []string{"--gid", strconv.FormatUint(uint64(g.GetGid()), 10), g.GetName()}
		sums = append(sums, fmt.Sprintf("gid %d → %d", cur.gid, g.GetGid()))
	}
	sp, sum, err := planSudo(ctx, env, sudoPath("group", g.GetName()), sudoContent(key, "%"+g.GetName(), g.GetSudo()))
	if err != nil {
		return nil, nil, err
	}
	if sp != nil {
		gp.sudo = sp
		sums = append(sums, sum)
	}
	return gp, sums, nil
}

// primaryOf returns the users whose primary group is gid.
func primaryOf(d *db, gid uint32) []string {
	var out []string
	for _, u := range d.users {
		if u.gid == gid {
			out = append(out, u.name)
		}
	}
	return out
}

// planSudo compares the drop-in at p with want (nil: absent) and, when
// they differ, checks want with visudo.
func planSudo(ctx context.Context, env *converge.Env, p string, want []byte) (*sudoPlan, string, error) {
	have, ok, err := readFile(env, p)
	if err != nil {
		return nil, "", err
	}
	switch {
	case want == nil && !ok:
		return nil, "", nil
	case want == nil:
		return &sudoPlan{path: p}, "remove " + p, nil
	case ok && bytes.Equal(have, want):
		if hp, err := env.Path(p); err == nil && modeOK(hp, 0o440) {
			return nil, "", nil
		}
	}
	if err := checkSudo(ctx, env, want); err != nil {
		return nil, "", err
	}
	n := strings.Count(string(want), "\n") - 1
	return &sudoPlan{path: p, content: want}, fmt.Sprintf("write %s (%d rule(s))", p, n), nil
}

// Apply implements converge.Provider.
func (p *GroupProvider) Apply(ctx context.Context, env *converge.Env, changes []*converge.Change) error {
	for _, c := range changes {
		gp, ok := c.Data.(*groupPlan)
		if !ok {
			c.Err = errors.New("group: change without plan data")
			continue
		}
		c.Err = applyGroup(ctx, env, gp)
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

func applyGroup(ctx context.Context, env *converge.Env, gp *groupPlan) error {
	if gp.create != nil {
		// Recorded first: a crash after groupadd still lets pruning find it.
		if err := groupLedger.set(env, gp.name, true); err != nil {
			return err
		}
		if err := tool(ctx, env, "groupadd", nil, gp.create...); err != nil {
			return err
		}
	}
	if gp.modify != nil {
		if err := tool(ctx, env, "groupmod", nil, gp.modify...); err != nil {
			return err
		}
	}
	if gp.sudo != nil {
		if err := writeSudo(ctx, env, gp.sudo.path, gp.sudo.content); err != nil {
			return err
		}
	}
	if gp.del {
		if err := tool(ctx, env, "groupdel", nil, gp.name); err != nil {
			return err
		}
	}
	if gp.del || gp.forget {
		return groupLedger.set(env, gp.name, false)
	}
	return nil
}
