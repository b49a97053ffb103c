package repo_test

import (
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/internal/testenv"
)

func dockerCmd(t *testing.T, cfgDir, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("docker", append([]string{"--config", cfgDir}, args...)...)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustDocker(t *testing.T, cfgDir, stdin string, args ...string) string {
	t.Helper()
	out, err := dockerCmd(t, cfgDir, stdin, args...)
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TestRegistryDocker: a real dockerd pushes an image built FROM scratch (a
// static Go binary) to hive-repo's registry on 127.0.0.1, is refused
// without credentials, pulls it back anonymously after removing it, and
// runs it. HIVE_REGISTRY_BIG_MB (default 50) sizes a second image's extra
// layer of random bytes, for the throughput figures logged.
func TestRegistryDocker(t *testing.T) {
	testenv.RequireTool(t, "docker")
	if out, err := exec.Command("docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		testenv.Missing(t, "a running Docker engine: %v %s", err, out)
	}
	e := start(t, nil)
	host := strings.TrimPrefix(e.url, "http://")

	// The image: a static binary and a Dockerfile FROM scratch.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello from the hive registry\") }\n"), 0o644)
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the image is built with go: %v", err)
	}
	build := exec.Command(gobin, "build", "-o", "hello", "main.go")
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GO111MODULE=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY hello /hello\nENTRYPOINT [\"/hello\"]\n"), 0o644)
	bigMB := 50
	if v := os.Getenv("HIVE_REGISTRY_BIG_MB"); v != "" {
		fmt.Sscan(v, &bigMB)
	}
	big := make([]byte, bigMB<<20)
	rand.Read(big)
	os.WriteFile(filepath.Join(dir, "big.bin"), big, 0o644)
	os.WriteFile(filepath.Join(dir, "Dockerfile.big"), []byte("FROM scratch\nCOPY hello /hello\nCOPY big.bin /big.bin\nENTRYPOINT [\"/hello\"]\n"), 0o644)
	os.WriteFile(filepath.Join(dir, ".dockerignore"), []byte("main.go\n"), 0o644)

	anon, authed := t.TempDir(), t.TempDir() // docker client configs: no credentials, logged in
	small := host + "/site/hello:v1"
	large := fmt.Sprintf("%s/site/hello-big:%dm", host, bigMB)

	t0 := time.Now()
	testenv.HeavyLock(t)
	t.Logf("waited %v for /tmp/hive-heavy.lock", time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	t.Cleanup(func() { dockerCmd(t, anon, "", "rmi", "-f", small, large) })
	mustDocker(t, anon, "", "build", "-q", "-t", small, dir)
	mustDocker(t, anon, "", "build", "-q", "-t", large, "-f", filepath.Join(dir, "Dockerfile.big"), dir)
	t.Logf("docker build of both images: %v", time.Since(t0).Round(time.Millisecond))

	if out, err := dockerCmd(t, anon, "", "push", small); err == nil || !strings.Contains(strings.ToLower(out), "unauthorized") {
		t.Fatalf("push without credentials: err %v\n%s", err, out)
	}
	if out, err := dockerCmd(t, authed, "wrong\n", "login", "-u", "hive", "--password-stdin", host); err == nil {
		t.Fatalf("login with a wrong token succeeded:\n%s", out)
	}
	mustDocker(t, authed, token+"\n", "login", "-u", "hive", "--password-stdin", host)

	timed := func(what string, size int64, args ...string) {
		t0 := time.Now()
		mustDocker(t, authed, "", args...)
		d := time.Since(t0)
		t.Logf("%s: %v (%.1f MB/s over %.1f MB of layers)", what, d.Round(time.Millisecond), float64(size)/1e6/d.Seconds(), float64(size)/1e6)
	}
	helloSize := fileSize(t, filepath.Join(dir, "hello"))
	timed("push small", helloSize, "push", small)
	timed(fmt.Sprintf("push %d MB layer", bigMB), helloSize+int64(len(big)), "push", large)
	mustDocker(t, anon, "", "rmi", small, large)

	// Pull back anonymously, run.
	t0 = time.Now()
	mustDocker(t, anon, "", "pull", small)
	t.Logf("pull small (anonymous): %v", time.Since(t0).Round(time.Millisecond))
	if out := mustDocker(t, anon, "", "run", "--rm", small); !strings.Contains(out, "hello from the hive registry") {
		t.Fatalf("run: %s", out)
	}
	t0 = time.Now()
	mustDocker(t, anon, "", "pull", large)
	d := time.Since(t0)
	t.Logf("pull %d MB layer (anonymous): %v (%.1f MB/s)", bigMB, d.Round(time.Millisecond), float64(helloSize+int64(len(big)))/1e6/d.Seconds())
}

func fileSize(t *testing.T, f string) int64 {
	st, err := os.Stat(f)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}
