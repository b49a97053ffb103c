package ctl_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/ctl"
	"github.com/hivefleet/hive/repo"
	"github.com/hivefleet/hive/repo/repotest"
	"github.com/hivefleet/hive/repo/sign"
)

func startRepo(t *testing.T) string {
	t.Helper()
	s, err := sign.Generate(sign.Ed25519, "t", "t@t")
	if err != nil {
		t.Fatal(err)
	}
	cfg := repo.DefaultConfig()
	cfg.DataDir, cfg.Signer, cfg.UploadToken = t.TempDir(), s, "tok"
	cfg.Debounce, cfg.MaxDelay = 20*time.Millisecond, 100*time.Millisecond
	srv, err := repo.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return "http://" + ln.Addr().String()
}

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := ctl.Main(args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestRepoCommands(t *testing.T) {
	url := startRepo(t)
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	os.WriteFile(tok, []byte("tok\n"), 0o600)
	noise := make([]byte, 2<<20)
	rand.Read(noise)
	big, err := repotest.BuildRPM(repotest.RPM{Name: "big", Version: "1", Files: map[string]string{"/usr/share/big": string(noise)}})
	if err != nil {
		t.Fatal(err)
	}
	small, _ := repotest.BuildDeb(repotest.Deb{Name: "small", Version: "1"})
	os.WriteFile(filepath.Join(dir, "big-1-1.noarch.rpm"), big, 0o644)
	os.WriteFile(filepath.Join(dir, "small_1_all.deb"), small, 0o644)

	code, out, errs := run(t, "repo", "upload", "--server", url, "--repo", "site", "--token-file", tok, "--reindex",
		filepath.Join(dir, "big-1-1.noarch.rpm"), filepath.Join(dir, "small_1_all.deb"))
	if code != 0 || !strings.Contains(out, "uploaded big-1-1.noarch.rpm (big 0:1-1 noarch)") || !regexp.MustCompile(`published site generation [1-9][0-9]*\n`).MatchString(out) {
		// The server's own debounced index may publish between the two
		// uploads (a loaded machine), so --reindex may publish generation 2.
		t.Fatalf("upload: %d\n%s\n%s", code, out, errs)
	}
	if !strings.Contains(errs, "100%") || !strings.Contains(errs, "big-1-1.noarch.rpm") {
		t.Errorf("no progress bar for a 2 MiB upload: %q", errs)
	}
	if strings.Contains(errs, "small_1_all.deb") {
		t.Errorf("progress bar for a small file: %q", errs)
	}
	// Conflict without --replace, then with it.
	other, _ := repotest.BuildDeb(repotest.Deb{Name: "small", Version: "2"})
	os.WriteFile(filepath.Join(dir, "small_1_all.deb"), other, 0o644)
	code, _, errs = run(t, "repo", "upload", "--server", url, "--repo", "site", "--token-file", tok, filepath.Join(dir, "small_1_all.deb"))
	if code == 0 || !strings.Contains(errs, "HTTP 409") {
		t.Errorf("conflict: %d %s", code, errs)
	}
	code, out, _ = run(t, "repo", "upload", "--server", url, "--repo", "site", "--token-file", tok, "--replace", filepath.Join(dir, "small_1_all.deb"))
	if code != 0 || !strings.Contains(out, "replaced small_1_all.deb") {
		t.Errorf("replace: %d %s", code, out)
	}
	// One package version, one file: the same version under another name
	// is refused naming the file that holds it; identical bytes under
	// another name change nothing and say where they are.
	rebuilt, _ := repotest.BuildDeb(repotest.Deb{Name: "small", Version: "2", Compression: "xz"})
	os.WriteFile(filepath.Join(dir, "small_2_all.deb"), rebuilt, 0o644)
	code, _, errs = run(t, "repo", "upload", "--server", url, "--repo", "site", "--token-file", tok, filepath.Join(dir, "small_2_all.deb"))
	if code == 0 || !strings.Contains(errs, "HTTP 409") || !strings.Contains(errs, "already in site as small_1_all.deb") {
		t.Errorf("same version, other name: %d %s", code, errs)
	}
	os.WriteFile(filepath.Join(dir, "small-copy.deb"), other, 0o644)
	code, out, errs = run(t, "repo", "upload", "--server", url, "--repo", "site", "--token-file", tok, filepath.Join(dir, "small-copy.deb"))
	if code != 0 || !strings.Contains(out, "unchanged small-copy.deb (small 2 all, stored as small_1_all.deb)") {
		t.Errorf("identical copy: %d %s %s", code, out, errs)
	}
	// Missing token.
	code, _, errs = run(t, "repo", "upload", "--server", url, "--repo", "site", filepath.Join(dir, "small_1_all.deb"))
	if code == 0 || !strings.Contains(errs, "401") {
		t.Errorf("no token: %d %s", code, errs)
	}
	code, out, _ = run(t, "repo", "list", "--server", url)
	if code != 0 || !strings.Contains(out, "site") || !strings.Contains(out, "REPO") {
		t.Errorf("list: %d %s", code, out)
	}
	code, out, _ = run(t, "repo", "show", "--server", url, "--repo", "site")
	if code != 0 || !strings.Contains(out, "big-1-1.noarch.rpm") || !strings.Contains(out, "small 2 all") {
		t.Errorf("show: %d %s", code, out)
	}
	code, out, _ = run(t, "repo", "remove", "--server", url, "--repo", "site", "--token-file", tok, "big-1-1.noarch.rpm")
	if code != 0 || !strings.Contains(out, "removed big-1-1.noarch.rpm") {
		t.Errorf("remove: %d %s", code, out)
	}
	code, _, errs = run(t, "repo", "remove", "--server", url, "--repo", "site", "--token-file", tok, "big-1-1.noarch.rpm")
	if code == 0 || !strings.Contains(errs, "404") {
		t.Errorf("remove twice: %d %s", code, errs)
	}
	code, out, _ = run(t, "repo", "show", "--server", url, "--repo", "site")
	if code != 0 || strings.Contains(out, "big-1-1.noarch.rpm") {
		t.Errorf("show after remove: %d %s", code, out)
	}
}
