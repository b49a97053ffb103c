package imagepin_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/hivefleet/hive/coordinator/imagepin"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/repo"
	"github.com/hivefleet/hive/repo/sign"
)

const uploadToken = "pin-test-upload-token"

// startRepo runs a real hive-repo (its /v2/ registry: token challenge,
// anonymous pulls) on 127.0.0.1.
func startRepo(t *testing.T) string {
	t.Helper()
	cfg := repo.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.UploadToken = uploadToken
	signer, err := sign.Generate(sign.Ed25519, "hive test", "test@hive.invalid")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Signer = signer
	srv, err := repo.New(cfg, slog.New(slog.DiscardHandler))
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
	return ln.Addr().String()
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// push uploads an image manifest (an empty config, no layers) as repo:tag
// and returns its digest.
func push(t *testing.T, host, repoName, tag, label string) string {
	t.Helper()
	do := func(method, url string, body []byte, ctype string) *http.Response {
		req, _ := http.NewRequest(method, url, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+uploadToken)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("%s %s: %s", method, url, resp.Status)
		}
		return resp
	}
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","config":{"Labels":{"v":%q}},"rootfs":{"type":"layers","diff_ids":[]}}`, label))
	base := "http://" + host
	resp := do(http.MethodPost, base+"/v2/"+repoName+"/blobs/uploads/", nil, "")
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "http") {
		loc = base + loc
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	do(http.MethodPut, loc+sep+"digest="+digest(cfg), cfg, "application/octet-stream")
	man := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[]}`, digest(cfg), len(cfg)))
	do(http.MethodPut, base+"/v2/"+repoName+"/manifests/"+tag, man, "application/vnd.oci.image.manifest.v1+json")
	return digest(man)
}

// TestPinThroughHiveRepo resolves tags against a real hive-repo registry
// with an upload token (so pulls go through its bearer challenge): a tag
// is pinned to its manifest digest, a moved tag to the new digest, a
// digest reference is kept, and a missing tag or registry is a precise
// error naming the service and its position.
func TestPinThroughHiveRepo(t *testing.T) {
	host := startRepo(t)
	d1 := push(t, host, "site/web", "v1", "one")
	reg := &hivev1.ServiceRegistry{Address: host, Insecure: true, Mirror: true}
	fixed := "sha256:" + strings.Repeat("0", 64)
	s := &hivev1.Site{Registry: reg, Services: []*hivev1.SwarmService{
		{Name: "a", Image: host + "/site/web:v1", Source: "site.yaml:10:3"},
		{Name: "b", Image: host + "/site/web:v1"},
		{Name: "c", Image: host + "/site/other@" + fixed},
	}}
	r := imagepin.New(imagepin.Config{})
	got, err := r.Pin(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{d1, d1, fixed} {
		if dg := got.GetServices()[i].GetDigest(); dg != want {
			t.Errorf("service %d digest %s, want %s", i, dg, want)
		}
	}
	if s.GetServices()[0].GetDigest() != "" {
		t.Error("Pin modified its input")
	}
	// The tag moves: the next push pins the new image.
	d2 := push(t, host, "site/web", "v1", "two")
	if d2 == d1 {
		t.Fatal("same digest for two images")
	}
	got, err = r.Pin(context.Background(), s)
	if err != nil || got.GetServices()[0].GetDigest() != d2 {
		t.Fatalf("after the tag moved: %v %v", got.GetServices()[0].GetDigest(), err)
	}
	// A tag that was never pushed.
	s.Services[0].Image = host + "/site/web:v9"
	_, err = r.Pin(context.Background(), s)
	if !errors.Is(err, imagepin.ErrUnresolved) || !strings.Contains(err.Error(), `site.yaml:10:3: services.a.image: `+host+`/site/web has no tag "v9"`) {
		t.Fatalf("missing tag: %v", err)
	}
	// No registry there.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	_, err = r.Pin(context.Background(), &hivev1.Site{Registry: reg, Services: []*hivev1.SwarmService{{Name: "x", Image: dead + "/a:v1"}}})
	if !errors.Is(err, imagepin.ErrUnresolved) || !strings.Contains(err.Error(), "services.x.image: registry unreachable") {
		t.Fatalf("dead registry: %v", err)
	}
}
