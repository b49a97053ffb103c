package repo_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hivefleet/hive/repo"
)

// ociReq sends one registry request with an optional Authorization header.
func ociReq(t *testing.T, method, url, auth, ctype string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if strings.Contains(url, "/manifests/") && method == http.MethodGet {
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func digestOf(b []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(b)) }

// pushImage pushes a one-layer OCI image through the distribution API
// (monolithic blob uploads, then the manifest) and returns the manifest's digest.
func pushImage(t *testing.T, base, auth, name, tag string, layer []byte) string {
	t.Helper()
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["` + digestOf(layer) + `"]}}`)
	for _, blob := range [][]byte{cfg, layer} {
		resp, b := ociReq(t, "POST", base+"/v2/"+name+"/blobs/uploads/", auth, "", nil)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("start upload: %d %s", resp.StatusCode, b)
		}
		loc := resp.Header.Get("Location")
		if strings.HasPrefix(loc, "/") {
			loc = base + loc
		}
		sep := "?"
		if strings.Contains(loc, "?") {
			sep = "&"
		}
		resp, b = ociReq(t, "PUT", loc+sep+"digest="+digestOf(blob), auth, "application/octet-stream", blob)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("finish upload: %d %s", resp.StatusCode, b)
		}
	}
	man, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digestOf(cfg), "size": len(cfg)},
		"layers": []map[string]any{{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digestOf(layer), "size": len(layer)}},
	})
	resp, b := ociReq(t, "PUT", base+"/v2/"+name+"/manifests/"+tag, auth, "application/vnd.oci.image.manifest.v1+json", man)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("put manifest: %d %s", resp.StatusCode, b)
	}
	return digestOf(man)
}

func basic(tok string) string {
	r, _ := http.NewRequest("GET", "http://x/", nil)
	r.SetBasicAuth("hive", tok)
	return r.Header.Get("Authorization")
}

// TestRegistryAuth: the ping challenges with hive-repo's own token realm;
// pushes need the upload token (basic or bearer, or a token from /v2/token
// obtained with it); pulls are anonymous by default.
func TestRegistryAuth(t *testing.T) {
	e := start(t, nil)
	resp, _ := ociReq(t, "GET", e.url+"/v2/", "", "", nil)
	if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `Bearer realm="`+e.url+`/v2/token"`) {
		t.Fatalf("ping: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	if resp, _ := ociReq(t, "GET", e.url+"/v2/", basic(token), "", nil); resp.StatusCode != 200 {
		t.Fatalf("ping with basic token: %d", resp.StatusCode)
	}
	// No credentials, a wrong token, an anonymous token: refused, nothing stored.
	for _, auth := range []string{"", basic("wrong"), "Bearer wrong"} {
		if resp, b := ociReq(t, "POST", e.url+"/v2/site/app/blobs/uploads/", auth, "", nil); resp.StatusCode != 401 {
			t.Fatalf("push with %q: %d %s", auth, resp.StatusCode, b)
		}
	}
	resp, b := ociReq(t, "GET", e.url+"/v2/token?service=hive-repo&scope=repository:site/app:pull,push", "", "", nil)
	var tk struct{ Token string }
	if resp.StatusCode != 200 || json.Unmarshal(b, &tk) != nil || tk.Token == "" {
		t.Fatalf("anonymous token: %d %s", resp.StatusCode, b)
	}
	if resp, _ := ociReq(t, "POST", e.url+"/v2/site/app/blobs/uploads/", "Bearer "+tk.Token, "", nil); resp.StatusCode != 401 {
		t.Fatalf("push with an anonymous (pull) token: %d", resp.StatusCode)
	}
	if resp, _ := ociReq(t, "GET", e.url+"/v2/token?service=hive-repo", basic("wrong"), "", nil); resp.StatusCode != 401 {
		t.Fatalf("token with a wrong password: %d", resp.StatusCode)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "registry/store/docker/registry/v2/repositories/site")); !os.IsNotExist(err) {
		t.Fatalf("refused pushes created the repository: %v", err)
	}
	// Push with a token obtained with basic credentials, and with the bare token.
	resp, b = ociReq(t, "GET", e.url+"/v2/token?service=hive-repo&scope=repository:site/app:pull,push", basic(token), "", nil)
	if resp.StatusCode != 200 || json.Unmarshal(b, &tk) != nil {
		t.Fatalf("push token: %d %s", resp.StatusCode, b)
	}
	layer := bytes.Repeat([]byte("hive layer "), 1000)
	d1 := pushImage(t, e.url, "Bearer "+tk.Token, "site/app", "v1", layer)
	pushImage(t, e.url, "Bearer "+token, "site/app", "v2", append(layer, 'x'))
	// Anonymous pull, by tag and by digest.
	for _, ref := range []string{"v1", d1} {
		if resp, b := ociReq(t, "GET", e.url+"/v2/site/app/manifests/"+ref, "", "", nil); resp.StatusCode != 200 || digestOf(b) != d1 {
			t.Fatalf("anonymous pull of %s: %d %s", ref, resp.StatusCode, b)
		}
	}
	if resp, b := ociReq(t, "GET", e.url+"/v2/site/app/blobs/"+digestOf(layer), "", "", nil); resp.StatusCode != 200 || !bytes.Equal(b, layer) {
		t.Fatalf("anonymous blob pull: %d", resp.StatusCode)
	}
	_, b = ociReq(t, "GET", e.url+"/metrics", "", "", nil)
	for _, want := range []string{`hive_repo_registry_requests_total{code="201",op="push"}`, `hive_repo_registry_tokens_total{result="push"} 1`, `hive_repo_registry_bytes_total{dir="in"}`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestRegistryTokenPull: with anonymous pulls off, a pull needs the upload
// token too, and the token endpoint refuses anonymous requests.
func TestRegistryTokenPull(t *testing.T) {
	e := start(t, func(c *repo.Config) { c.Registry.AnonymousPull = false })
	d := pushImage(t, e.url, basic(token), "site/db", "1", []byte("layer"))
	if resp, _ := ociReq(t, "GET", e.url+"/v2/site/db/manifests/1", "", "", nil); resp.StatusCode != 401 {
		t.Fatalf("anonymous pull: %d", resp.StatusCode)
	}
	if resp, _ := ociReq(t, "GET", e.url+"/v2/token?service=hive-repo", "", "", nil); resp.StatusCode != 401 {
		t.Fatalf("anonymous token: %d", resp.StatusCode)
	}
	if resp, b := ociReq(t, "GET", e.url+"/v2/site/db/manifests/1", basic(token), "", nil); resp.StatusCode != 200 || digestOf(b) != d {
		t.Fatalf("pull with the token: %d", resp.StatusCode)
	}
}

// TestRegistryPullThrough: a hive-repo whose registry caches an upstream
// (another hive-repo) serves the upstream's images, keeps them once the
// upstream is gone, and still takes pushes of its own.
func TestRegistryPullThrough(t *testing.T) {
	up := start(t, nil)
	layer := bytes.Repeat([]byte("upstream layer "), 5000)
	d := pushImage(t, up.url, basic(token), "library/base", "1", layer)
	e := start(t, func(c *repo.Config) { c.Registry.Upstream = up.url })
	if resp, b := ociReq(t, "GET", e.url+"/v2/library/base/manifests/1", "", "", nil); resp.StatusCode != 200 || digestOf(b) != d {
		t.Fatalf("pull-through manifest: %d %s", resp.StatusCode, b)
	}
	if resp, b := ociReq(t, "GET", e.url+"/v2/library/base/blobs/"+digestOf(layer), "", "", nil); resp.StatusCode != 200 || !bytes.Equal(b, layer) {
		t.Fatalf("pull-through blob: %d", resp.StatusCode)
	}
	// The site's own pushes stay local.
	own := pushImage(t, e.url, basic(token), "site/web", "1", []byte("own"))
	if resp, b := ociReq(t, "GET", e.url+"/v2/site/web/manifests/1", "", "", nil); resp.StatusCode != 200 || digestOf(b) != own {
		t.Fatalf("local pull beside the cache: %d", resp.StatusCode)
	}
	up.stop()
	if resp, b := ociReq(t, "GET", e.url+"/v2/library/base/manifests/"+d, "", "", nil); resp.StatusCode != 200 || digestOf(b) != d {
		t.Fatalf("cached manifest with the upstream gone: %d %s", resp.StatusCode, b)
	}
	if resp, b := ociReq(t, "GET", e.url+"/v2/library/base/blobs/"+digestOf(layer), "", "", nil); resp.StatusCode != 200 || !bytes.Equal(b, layer) {
		t.Fatalf("cached blob with the upstream gone: %d", resp.StatusCode)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "registry-cache")); err != nil {
		t.Fatal(err)
	}
	resp, b := ociReq(t, "GET", e.url+"/metrics", "", "", nil)
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`hive_repo_registry_requests_total{code="200",op="cache"}`)) {
		t.Errorf("metrics lack the cache counter")
	}
}

func TestRegistryBadUpstream(t *testing.T) {
	cfg := repo.DefaultConfig()
	cfg.DataDir, cfg.Signer, cfg.UploadToken = t.TempDir(), testSigner(t), token
	cfg.Registry.Upstream = "ftp://x"
	if _, err := repo.New(cfg, nil); err == nil || !strings.Contains(err.Error(), "registry upstream") {
		t.Fatalf("got %v", err)
	}
}

// TestRegistryDev: in --dev (no upload token) pushes need no credentials
// and the ping does not challenge.
func TestRegistryDev(t *testing.T) {
	e := start(t, func(c *repo.Config) { c.Dev, c.UploadToken = true, "" })
	if resp, _ := ociReq(t, "GET", e.url+"/v2/", "", "", nil); resp.StatusCode != 200 {
		t.Fatalf("dev ping: %d", resp.StatusCode)
	}
	d := pushImage(t, e.url, "", "dev/app", "latest", []byte("dev layer"))
	if resp, b := ociReq(t, "GET", e.url+"/v2/dev/app/manifests/latest", "", "", nil); resp.StatusCode != 200 || digestOf(b) != d {
		t.Fatalf("dev pull: %d", resp.StatusCode)
	}
}

// TestRegistryDisabled: Config.Registry.Disabled leaves /v2/ unserved.
func TestRegistryDisabled(t *testing.T) {
	e := start(t, func(c *repo.Config) { c.Registry.Disabled = true })
	if resp, _ := ociReq(t, "GET", e.url+"/v2/", "", "", nil); resp.StatusCode != 404 {
		t.Fatalf("disabled registry: %d", resp.StatusCode)
	}
}
