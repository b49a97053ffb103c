package repocli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hivefleet/hive/repo/repotest"
	"github.com/hivefleet/hive/repo/sign"
)

func TestKeygenAndIndex(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key.asc")
	var out, errb bytes.Buffer
	if code := Main([]string{"keygen", "--out", key}, &out, &errb); code != 0 {
		t.Fatalf("keygen: %s", errb.String())
	}
	b, _ := os.ReadFile(key)
	if _, err := sign.Load(b); err != nil {
		t.Fatalf("generated key does not load: %v", err)
	}
	if fi, _ := os.Stat(key); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", fi.Mode())
	}
	if code := Main([]string{"keygen", "--out", key}, &out, &errb); code == 0 {
		t.Errorf("keygen overwrote an existing key")
	}
	yum, apt := filepath.Join(dir, "yum"), filepath.Join(dir, "apt")
	os.MkdirAll(yum, 0o755)
	os.MkdirAll(apt, 0o755)
	r, _ := repotest.BuildRPM(repotest.RPM{Name: "x", Version: "1"})
	os.WriteFile(filepath.Join(yum, "x.rpm"), r, 0o644)
	d, _ := repotest.BuildDeb(repotest.Deb{Name: "xx", Version: "1"})
	os.WriteFile(filepath.Join(apt, "xx.deb"), d, 0o644)
	cache := filepath.Join(dir, "cache")
	for i, want := range []string{"(1 read, 0 from cache)", "(0 read, 1 from cache)"} {
		out.Reset()
		if code := Main([]string{"index", "--yum", yum, "--signing-key", key, "--cache", cache}, &out, &errb); code != 0 {
			t.Fatalf("index --yum: %s", errb.String())
		}
		if !strings.Contains(out.String(), want) {
			t.Errorf("run %d: %q lacks %q", i, out.String(), want)
		}
	}
	for _, f := range []string{"repodata/repomd.xml", "repodata/repomd.xml.asc"} {
		if _, err := os.Stat(filepath.Join(yum, f)); err != nil {
			t.Error(err)
		}
	}
	if code := Main([]string{"index", "--apt", apt, "--signing-key", key}, &out, &errb); code != 0 {
		t.Fatalf("index --apt: %s", errb.String())
	}
	for _, f := range []string{"Packages", "Packages.gz", "Packages.xz", "Release", "InRelease", "Release.gpg"} {
		if _, err := os.Stat(filepath.Join(apt, f)); err != nil {
			t.Error(err)
		}
	}
	if code := Main([]string{"index"}, &out, &errb); code == 0 {
		t.Errorf("index without a directory succeeded")
	}
}

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "hive-repo.conf")
	os.WriteFile(conf, []byte("# comment\naddr: 127.0.0.1:0\nbogus: 1\n"), 0o644)
	var out, errb bytes.Buffer
	if code := Main([]string{"--config", conf, "--data-dir", dir}, &out, &errb); code == 0 || !strings.Contains(errb.String(), `unknown key "bogus"`) {
		t.Errorf("bad config accepted: %s", errb.String())
	}
	os.WriteFile(conf, []byte("addr: 127.0.0.1:0\n"), 0o644)
	errb.Reset()
	if code := Main([]string{"--config", conf, "--data-dir", dir}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "--signing-key is required") {
		t.Errorf("missing key accepted: %s", errb.String())
	}
}
