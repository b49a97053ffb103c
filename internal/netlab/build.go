package netlab

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// builds caches Build results per test binary: the real binaries are built
// once per `go test` run, whatever the number of tests using them.
var builds struct {
	sync.Mutex
	dir  string
	done map[string]error
}

// Build builds the module's commands (for example "hive-agent",
// "hivectl"; each from ./cmd/NAME) once per test process and returns their
// paths by name. A command that fails to build fails t with the compiler's
// message. Set NETLAB_RACE=1 to build them with the race detector (slower,
// several times the memory per process). With NETLAB_BIN_DIR set, nothing is
// built: the binaries are taken from that directory (to test an installed or
// released build).
func Build(t testing.TB, names ...string) map[string]string {
	t.Helper()
	if dir := os.Getenv("NETLAB_BIN_DIR"); dir != "" {
		paths := map[string]string{}
		for _, n := range names {
			p, err := filepath.Abs(filepath.Join(dir, n))
			if err == nil {
				_, err = os.Stat(p)
			}
			if err != nil {
				t.Fatalf("netlab: NETLAB_BIN_DIR: %v", err)
			}
			paths[n] = p
		}
		return paths
	}
	builds.Lock()
	defer builds.Unlock()
	if builds.dir == "" {
		dir, err := os.MkdirTemp("", "netlab-bin-")
		if err != nil {
			t.Fatalf("netlab: %v", err)
		}
		builds.dir = dir
		builds.done = map[string]error{}
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	var todo []string
	for _, n := range names {
		if _, ok := builds.done[n]; !ok {
			todo = append(todo, n)
		}
	}
	if len(todo) > 0 {
		// The same settings as `make build`, so that after it only the link
		// step is left to do.
		args := []string{"build", "-trimpath", "-o", builds.dir + "/"}
		if os.Getenv("NETLAB_RACE") == "1" {
			args = append(args, "-race")
		}
		for _, n := range todo {
			args = append(args, "./cmd/"+n)
		}
		var out bytes.Buffer
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		if os.Getenv("NETLAB_RACE") != "1" { // -race needs cgo
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		}
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if err != nil {
			err = fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out.String())
		}
		for _, n := range todo {
			builds.done[n] = err
		}
	}
	paths := map[string]string{}
	for _, n := range names {
		if err := builds.done[n]; err != nil {
			t.Fatalf("netlab: build %s: %v", n, err)
		}
		paths[n] = filepath.Join(builds.dir, n)
	}
	return paths
}

// CleanupBuilds removes the built binaries; call it from TestMain after
// m.Run.
func CleanupBuilds() {
	builds.Lock()
	defer builds.Unlock()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
		builds.dir = ""
		builds.done = nil
	}
}

// moduleRoot finds the directory holding go.mod, from the working
// directory (a test runs in its package's directory) upwards.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}
