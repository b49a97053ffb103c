package repotest_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/hivefleet/hive/repo/repotest"
)

func TestServer(t *testing.T) {
	s := repotest.NewServer(t)
	d, err := repotest.BuildDeb(repotest.Deb{Name: "hello", Version: "1"})
	if err != nil {
		t.Fatal(err)
	}
	s.Upload("site", "hello_1_all.deb", d)
	s.Reindex("site")
	resp, err := http.Get(s.AptURL("site") + "/dists/stable/main/binary-amd64/Packages")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "Package: hello") {
		t.Errorf("Packages: %s", b)
	}
}
