package pkgrepo_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/convergetest"
	"github.com/hivefleet/hive/converge/pkgrepo"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func repo(r *hivev1.Repo) *hivev1.Resource {
	return &hivev1.Resource{Key: "repo:" + r.GetName(), Kind: &hivev1.Resource_Repo{Repo: r}}
}

func TestAptTimeline(t *testing.T) {
	key := convergetest.NewGPGKey(t)
	root := t.TempDir()
	env := &converge.Env{Root: root, Family: converge.FamilyDebian, Runner: converge.ExecRunner{}}
	r := repo(&hivev1.Repo{Name: "hive", Url: "http://repo.example:7480/apt", Components: []string{"main", "extra"},
		SigningKey: key.Public, Gpgcheck: true, Architectures: []string{"amd64"}})
	src := filepath.Join(root, "etc/apt/sources.list.d/hive-hive.sources")
	convergetest.Run(t, convergetest.Timeline{
		Provider: pkgrepo.New(pkgrepo.Config{}),
		Env:      env,
		Desired:  []*hivev1.Resource{r},
		Check: func(t *testing.T) {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			want := "# Managed by hive (repo:hive); local changes are overwritten.\nTypes: deb\nURIs: http://repo.example:7480/apt\n" +
				"Suites: stable\nComponents: main extra\nArchitectures: amd64\nSigned-By: /etc/apt/keyrings/hive-hive.asc\n"
			if string(b) != want {
				t.Errorf("sources:\n%s\nwant:\n%s", b, want)
			}
			k, _ := os.ReadFile(filepath.Join(root, "etc/apt/keyrings/hive-hive.asc"))
			if string(k) != key.Public {
				t.Error("key not written")
			}
		},
		Drift: func(t *testing.T) {
			if err := os.WriteFile(src, []byte("Types: deb\nURIs: http://evil/\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		},
	})
}

func TestYumFiles(t *testing.T) {
	key := convergetest.NewGPGKey(t)
	root := t.TempDir()
	env := &converge.Env{Root: root, Family: converge.FamilyRHEL}
	p := pkgrepo.New(pkgrepo.Config{})
	rs := []*hivev1.Resource{
		repo(&hivev1.Repo{Name: "hive", Url: "http://repo:7480/yum", SigningKey: key.Public, Gpgcheck: true}),
		repo(&hivev1.Repo{Name: "byurl", Url: "http://repo:7480/yum2", SigningKeyUrl: "https://keys.example/k.asc", Gpgcheck: true}),
		repo(&hivev1.Repo{Name: "plain", Url: "http://repo:7480/yum3"}),
	}
	convergetest.Converge(t, p, env, rs, nil, 3)
	for name, want := range map[string]string{
		"hive":  "[hive-hive]\nname=hive (hive)\nbaseurl=http://repo:7480/yum\nenabled=1\ngpgcheck=1\ngpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-hive-hive\n",
		"byurl": "[hive-byurl]\nname=byurl (hive)\nbaseurl=http://repo:7480/yum2\nenabled=1\ngpgcheck=1\ngpgkey=https://keys.example/k.asc\n",
		"plain": "[hive-plain]\nname=plain (hive)\nbaseurl=http://repo:7480/yum3\nenabled=1\ngpgcheck=0\n",
	} {
		b, err := os.ReadFile(filepath.Join(root, "etc/yum.repos.d/hive-"+name+".repo"))
		if err != nil || !strings.HasSuffix(string(b), want) {
			t.Errorf("%s:\n%s\nwant suffix:\n%s", name, b, want)
		}
	}
	convergetest.Converge(t, p, env, rs, nil, 0)
}

func TestBadKeysAndMismatch(t *testing.T) {
	key := convergetest.NewGPGKey(t)
	damaged := []byte(key.Public)
	// Flip one base64 character in the body.
	i := strings.Index(key.Public, "\n\n") + 10
	if damaged[i] == 'A' {
		damaged[i] = 'B'
	} else {
		damaged[i] = 'A'
	}
	for name, k := range map[string]string{
		"garbage":   "not a key",
		"damaged":   string(damaged),
		"private":   strings.ReplaceAll(key.Public, "PUBLIC KEY", "PRIVATE KEY"),
		"notbase64": "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!!\n-----END PGP PUBLIC KEY BLOCK-----\n",
	} {
		if err := pkgrepo.CheckKey([]byte(k)); !errors.Is(err, pkgrepo.ErrBadKey) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := pkgrepo.CheckKey([]byte(key.Public)); err != nil {
		t.Errorf("good key: %v", err)
	}
	// In a run: the repo fails precisely and writes nothing.
	root := t.TempDir()
	env := &converge.Env{Root: root, Family: converge.FamilyDebian}
	b := &converge.Batch{Items: []converge.Item{
		{Key: "repo:a", Resource: repo(&hivev1.Repo{Name: "a", Url: "http://x", Gpgcheck: true, SigningKey: string(damaged)})},
		{Key: "repo:b", Resource: repo(&hivev1.Repo{Name: "b", Url: "http://x", Type: hivev1.RepoType_REPO_TYPE_YUM})},
		{Key: "repo:c", Resource: repo(&hivev1.Repo{Name: "c", Url: "http://x", Gpgcheck: true})},
	}}
	chs, err := pkgrepo.New(pkgrepo.Config{}).Plan(context.Background(), env, b)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"checksum mismatch", `yum repository on a node of family "debian"`, "no signing_key"} {
		if chs[i].Err == nil || !strings.Contains(chs[i].Err.Error(), want) {
			t.Errorf("%d: %v, want %q", i, chs[i].Err, want)
		}
	}
	if ents, _ := os.ReadDir(root); len(ents) != 0 {
		t.Errorf("wrote files: %v", ents)
	}
}

func FuzzCheckKey(f *testing.F) {
	f.Add([]byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = pkgrepo.CheckKey(b) // must not panic
	})
}

func TestPruneRemovedRepos(t *testing.T) {
	key := convergetest.NewGPGKey(t)
	root := t.TempDir()
	env := &converge.Env{Root: root, Family: converge.FamilyDebian}
	p := pkgrepo.New(pkgrepo.Config{})
	a := repo(&hivev1.Repo{Name: "a", Url: "http://x/a", SigningKey: key.Public, Gpgcheck: true})
	b := repo(&hivev1.Repo{Name: "b", Url: "http://x/b", SigningKey: key.Public, Gpgcheck: true})
	convergetest.Converge(t, p, env, []*hivev1.Resource{a, b}, nil, 2)
	// Someone else's file that merely looks like ours stays.
	foreign := filepath.Join(root, "etc/apt/sources.list.d/hive-c.sources")
	if err := os.WriteFile(foreign, []byte("Types: deb\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := convergetest.Tree(t, root)
	chs, err := p.Prune(context.Background(), env, []converge.Item{{Key: a.Key, Resource: a}})
	if err != nil || len(chs) != 1 || chs[0].Key != "repo:b" {
		t.Fatalf("prune: %v %+v", err, chs)
	}
	if convergetest.Tree(t, root) != before {
		t.Fatal("prune (plan) changed files")
	}
	if err := p.Apply(context.Background(), env, chs); err != nil || chs[0].Err != nil {
		t.Fatalf("apply: %v %v", err, chs[0].Err)
	}
	for _, f := range []string{"etc/apt/sources.list.d/hive-b.sources", "etc/apt/keyrings/hive-b.asc"} {
		if _, err := os.Stat(filepath.Join(root, f)); !os.IsNotExist(err) {
			t.Errorf("%s not removed", f)
		}
	}
	for _, f := range []string{"etc/apt/sources.list.d/hive-a.sources", "etc/apt/keyrings/hive-a.asc", "etc/apt/sources.list.d/hive-c.sources"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("%s removed: %v", f, err)
		}
	}
	if chs, _ := p.Prune(context.Background(), env, []converge.Item{{Key: a.Key, Resource: a}}); len(chs) != 0 {
		t.Errorf("second prune: %+v", chs)
	}
}
