package users

import (
	"context"
	"os"
	"sort"
	"strings"

	"github.com/hivefleet/hive/converge"
)

// staleDropIns returns the names (as in the file name) of the drop-ins
// hive-KIND-NAME in /etc/sudoers.d that keep does not hold.
func staleDropIns(env *converge.Env, kind string, keep map[string]bool) ([]string, error) {
	dir, err := env.Path(sudoersDir)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil // no directory: nothing of ours
	}
	var out []string
	prefix := "hive-" + kind + "-"
	for _, e := range ents {
		n := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(n, prefix) {
			continue
		}
		if !keep[sudoersDir+"/"+n] {
			out = append(out, strings.TrimPrefix(n, prefix))
		}
	}
	sort.Strings(out)
	return out, nil
}

// Prune implements converge.Pruner: a user hive created (recorded in
// /var/lib/hive/users.json of the root) that is no longer in the node
// state is deleted, its home kept; a sudoers drop-in hive-user-NAME of a
// user no longer in the state is removed. Nothing else is touched.
func (p *UserProvider) Prune(ctx context.Context, env *converge.Env, present []converge.Item) ([]*converge.Change, error) {
	inState := map[string]bool{}
	keep := map[string]bool{}
	for _, it := range present {
		inState[it.Resource.GetUser().GetName()] = true
		keep[sudoPath("user", it.Resource.GetUser().GetName())] = true
	}
	created, err := userLedger.load(env)
	if err != nil {
		return nil, err
	}
	d, err := pruneDB(env, created)
	if err != nil {
		return nil, err
	}
	plans := map[string]*userPlan{}
	var sums = map[string][]string{}
	for n := range created {
		if inState[n] {
			continue
		}
		if _, ok := d.users[n]; ok {
			plans[n] = &userPlan{name: n, del: []string{n}}
			sums[n] = append(sums[n], "delete user "+n+" (created by hive, no longer in the site; home kept)")
		}
	}
	stale, err := staleDropIns(env, "user", keep)
	if err != nil {
		return nil, err
	}
	for _, n := range stale {
		pl := plans[n]
		if pl == nil {
			pl = &userPlan{name: n}
			plans[n] = pl
		}
		pl.sudo = &sudoPlan{path: sudoersDir + "/hive-user-" + n}
		sums[n] = append(sums[n], "remove "+pl.sudo.path)
	}
	return changes(KindUser, plans, sums), nil
}

// Prune implements converge.Pruner: a group hive created that is no
// longer in the node state is deleted (unless it is some user's primary
// group), and a drop-in hive-group-NAME of a group no longer in the state
// is removed.
func (p *GroupProvider) Prune(ctx context.Context, env *converge.Env, present []converge.Item) ([]*converge.Change, error) {
	inState := map[string]bool{}
	keep := map[string]bool{}
	for _, it := range present {
		inState[it.Resource.GetGroup().GetName()] = true
		keep[sudoPath("group", it.Resource.GetGroup().GetName())] = true
	}
	created, err := groupLedger.load(env)
	if err != nil {
		return nil, err
	}
	d, err := pruneDB(env, created)
	if err != nil {
		return nil, err
	}
	plans := map[string]*groupPlan{}
	sums := map[string][]string{}
	for n := range created {
		if inState[n] {
			continue
		}
		if g, ok := d.groups[n]; ok && len(primaryOf(d, g.gid)) == 0 {
			plans[n] = &groupPlan{name: n, del: true}
			sums[n] = append(sums[n], "delete group "+n+" (created by hive, no longer in the site)")
		}
	}
	stale, err := staleDropIns(env, "group", keep)
	if err != nil {
		return nil, err
	}
	for _, n := range stale {
		pl := plans[n]
		if pl == nil {
			pl = &groupPlan{name: n}
			plans[n] = pl
		}
		pl.sudo = &sudoPlan{path: sudoersDir + "/hive-group-" + n}
		sums[n] = append(sums[n], "remove "+pl.sudo.path)
	}
	return changes(KindGroup, plans, sums), nil
}

// pruneDB loads the account database when hive created accounts (a root
// without /etc/passwd, such as a fresh sandbox, has nothing to prune).
func pruneDB(env *converge.Env, created map[string]bool) (*db, error) {
	if len(created) == 0 {
		return &db{users: map[string]account{}, groups: map[string]group{}, gids: map[uint32]string{}}, nil
	}
	return loadDB(env)
}

func changes[P any](kind string, plans map[string]P, sums map[string][]string) []*converge.Change {
	names := make([]string, 0, len(plans))
	for n := range plans {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]*converge.Change, 0, len(names))
	for _, n := range names {
		out = append(out, &converge.Change{Key: kind + ":" + n, Needed: true, Data: plans[n],
			Summary: strings.Join(sums[n], "; "), Diff: strings.Join(sums[n], "\n") + "\n"})
	}
	return out
}
