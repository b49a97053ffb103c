package pkgrepo

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hivefleet/hive/converge"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// managed lists, per directory, the hive-owned file names: prefix and
// suffix around the repo name.
var managed = []struct{ dir, prefix, suffix string }{
	{"/etc/apt/sources.list.d", "hive-", ".sources"},
	{"/etc/apt/keyrings", "hive-", ".asc"},
	{"/etc/yum.repos.d", "hive-", ".repo"},
	{"/etc/pki/rpm-gpg", "RPM-GPG-KEY-hive-", ""},
}

// Prune implements converge.Pruner: the files of hive repos that are no
// longer in the node state (hive-NAME.sources, hive-NAME.asc,
// hive-NAME.repo, RPM-GPG-KEY-hive-NAME) are removed, one change per repo
// keyed repo:NAME. Other files are never touched.
func (p *Provider) Prune(ctx context.Context, env *converge.Env, present []converge.Item) ([]*converge.Change, error) {
	keep := map[string]bool{}
	for _, it := range present {
		keep[it.Resource.GetRepo().GetName()] = true
	}
	stale := map[string][]string{} // repo name → paths
	for _, m := range managed {
		dir, err := env.Path(m.dir)
		if err != nil {
			return nil, err
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue // no such directory: nothing of ours there
		}
		for _, e := range ents {
			n := e.Name()
			if e.IsDir() || !strings.HasPrefix(n, m.prefix) || !strings.HasSuffix(n, m.suffix) || strings.HasPrefix(n, ".") {
				continue
			}
			name := strings.TrimSuffix(strings.TrimPrefix(n, m.prefix), m.suffix)
			if name == "" || keep[name] || !nameRE.MatchString(name) {
				continue
			}
			if m.dir == "/etc/apt/sources.list.d" || m.dir == "/etc/yum.repos.d" {
				// Only files hive wrote: they start with its header.
				b, err := os.ReadFile(filepath.Join(dir, n))
				if err != nil || !strings.HasPrefix(string(b), "# Managed by hive (repo:") {
					continue
				}
			}
			stale[name] = append(stale[name], path.Join(m.dir, n))
		}
	}
	names := make([]string, 0, len(stale))
	for n := range stale {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []*converge.Change
	for _, n := range names {
		fb := &converge.Batch{}
		for _, fp := range stale[n] {
			r := &hivev1.Resource{Key: converge.KindFile + ":" + fp, Kind: &hivev1.Resource_File{File: &hivev1.File{Path: fp, State: hivev1.FileState_FILE_STATE_ABSENT}}}
			fb.Items = append(fb.Items, converge.Item{Key: r.Key, Resource: r})
		}
		fchs, err := p.files.Plan(ctx, env, fb)
		if err != nil {
			return nil, err
		}
		s := &sub{}
		for i, fc := range fchs {
			fc.Key, fc.Resource = fb.Items[i].Key, fb.Items[i].Resource
			if fc.Err != nil {
				return nil, fmt.Errorf("%s: %w", stale[n][i], fc.Err)
			}
			if fc.Needed {
				s.changes = append(s.changes, fc)
			}
		}
		out = append(out, &converge.Change{Key: converge.KindRepo + ":" + n, Needed: true, Data: s,
			Summary: "remove repository definition (no longer in the site): " + strings.Join(stale[n], ", "),
			Diff:    "-" + strings.Join(stale[n], "\n-") + "\n"})
	}
	return out, nil
}
