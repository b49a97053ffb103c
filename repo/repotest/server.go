package repotest

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/hivefleet/hive/repo"
	"github.com/hivefleet/hive/repo/sign"
)

// Server is a real hive-repo on 127.0.0.1, for tests of other packages
// (converge's package provider, agents) that want a signed YUM/APT
// repository served over HTTP instead of a file:// one.
type Server struct {
	URL    string // http://127.0.0.1:port
	Token  string
	Signer *sign.Signer
	t      testing.TB
}

// NewServer starts a hive-repo with a fresh Ed25519 key in t.TempDir(); it
// stops when the test ends. Publishing is immediate after Reindex.
func NewServer(t testing.TB) *Server {
	t.Helper()
	s, err := sign.Generate(sign.Ed25519, "hive test repo", "repo@hive.invalid")
	if err != nil {
		t.Fatal(err)
	}
	cfg := repo.DefaultConfig()
	cfg.DataDir, cfg.Signer, cfg.UploadToken = t.TempDir(), s, "test-token"
	cfg.Debounce, cfg.MaxDelay = 20*time.Millisecond, 200*time.Millisecond
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
	return &Server{URL: "http://" + ln.Addr().String(), Token: cfg.UploadToken, Signer: s, t: t}
}

// Upload puts a package file into repository repoName.
func (s *Server) Upload(repoName, file string, data []byte) {
	s.t.Helper()
	s.do("PUT", "/api/v1/repos/"+repoName+"/packages/"+file, data)
}

// Reindex publishes repoName now.
func (s *Server) Reindex(repoName string) {
	s.t.Helper()
	s.do("POST", "/api/v1/repos/"+repoName+"/reindex", nil)
}

func (s *Server) do(method, path string, body []byte) {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.URL+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		s.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
}

// YumURL is the dnf baseurl of repoName.
func (s *Server) YumURL(repoName string) string { return s.URL + "/yum/" + repoName + "/" }

// AptURL is the apt URI of repoName (suite stable, component main).
func (s *Server) AptURL(repoName string) string { return s.URL + "/apt/" + repoName }

// KeyURL is the URL of the public key; PublicKey is its content.
func (s *Server) KeyURL(repoName string) string { return s.URL + "/keys/" + repoName + ".asc" }

// PublicKey returns the armored public signing key.
func (s *Server) PublicKey() []byte { return s.Signer.PublicArmored() }
