package agent

import (
	"path"
	"path/filepath"
	"strings"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/drbd"
	"github.com/hivefleet/hive/converge/pkgrepo"
	"github.com/hivefleet/hive/converge/swarm"
	"github.com/hivefleet/hive/internal/atomicfile"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Stale temporary files. Every atomic write of the agent goes through
// internal/atomicfile, whose temporary files are ".<name>.hive-tmp-<n>";
// a crash between create and rename leaves one behind. At start the agent
// removes them, never anything else:
//
//   - in the directories it owns (DataDir, its reports queue, its tls
//     directory), every file of that pattern, and those of older versions
//     (".<name>.tmp-<n>", "<name>.tmp" for the firewall window);
//   - next to the files hive manages, as listed by the cached state (file
//     resources, repo definitions and keys, drbd resource files, the swarm
//     marker), only the
//     temporary files of writes to exactly those targets, plus the
//     pattern of older versions for the same targets.

// isDataTemp matches temporary files in the agent's own directories.
func isDataTemp(name string) bool {
	if atomicfile.IsTemp(name) {
		return true
	}
	// Before internal/atomicfile: ".<name>.tmp-<n>" (cache, reports).
	if i := strings.LastIndex(name, ".tmp-"); strings.HasPrefix(name, ".") && i > 0 && digits(name[i+len(".tmp-"):]) {
		return true
	}
	return false
}

func digits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// removeStaleTemps removes the temporary files crashed writes left (see
// above); st is the cached state (nil: only the agent's own directories).
// Failures are logged: a leftover costs disk space, not correctness.
func (a *Agent) removeStaleTemps(st *hivev1.NodeState) {
	clean := func(dir string, match func(string) bool) {
		removed, err := atomicfile.RemoveStale(dir, match)
		for _, p := range removed {
			a.log.Info("removed a temporary file left by a crash", "file", p)
		}
		if err != nil {
			a.log.Warn("cannot remove stale temporary files", "dir", dir, "err", err)
		}
	}
	// DataDir and its reports queue: OpenCache. The bootstrapped
	// certificate and key:
	clean(filepath.Join(a.cfg.DataDir, "tls"), isDataTemp)
	// The firewall window state of older versions.
	clean(a.cfg.DataDir, func(name string) bool { return name == "firewall-window.json.tmp" })

	// Managed targets, grouped by host directory.
	targets := map[string][]string{} // dir → base names
	add := func(p string) {
		root := a.cfg.Root
		if root == "" {
			root = "/"
		}
		dir, err := converge.SecureJoin(root, path.Dir(p))
		if err != nil {
			return
		}
		targets[dir] = append(targets[dir], path.Base(p))
	}
	add(swarm.MarkerPath)
	for _, r := range st.GetResources() {
		switch k := r.GetKind().(type) {
		case *hivev1.Resource_File:
			if k.File.GetState() != hivev1.FileState_FILE_STATE_DIRECTORY && path.IsAbs(k.File.GetPath()) {
				add(path.Clean(k.File.GetPath()))
			}
		case *hivev1.Resource_Drbd:
			add(drbd.ConfDir + "/" + k.Drbd.GetName() + ".res")
		case *hivev1.Resource_Repo:
			src, key := pkgrepo.AptPaths(k.Repo.GetName())
			repo, rkey := pkgrepo.YumPaths(k.Repo.GetName())
			add(src)
			add(key)
			add(repo)
			add(rkey)
		}
	}
	for dir, bases := range targets {
		clean(dir, func(name string) bool {
			for _, b := range bases {
				if atomicfile.IsTempOf(name, b) || isLegacyManagedTemp(name, b) {
					return true
				}
			}
			return false
		})
	}
}

// isLegacyManagedTemp matches what older versions left next to base: the
// file provider's ".<base>.hive-<n>", the drbd provider's ".hive-<n>.tmp"
// beside a resource file, the swarm marker's "<base>.tmp".
func isLegacyManagedTemp(name, base string) bool {
	if p := "." + base + ".hive-"; strings.HasPrefix(name, p) && digits(name[len(p):]) {
		return true
	}
	if strings.HasSuffix(base, ".res") && strings.HasPrefix(name, ".hive-") && strings.HasSuffix(name, ".tmp") &&
		digits(strings.TrimSuffix(strings.TrimPrefix(name, ".hive-"), ".tmp")) {
		return true
	}
	return base == path.Base(swarm.MarkerPath) && name == base+".tmp"
}
