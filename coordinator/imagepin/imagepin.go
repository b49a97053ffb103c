// Package imagepin resolves the image tags of a site's swarm services to
// digests, so that a generation pins what its services run: the
// coordinator calls Pin on every push (and plan) before the site goes
// through raft, and the agents deploy "image@digest".
//
// Where a reference is resolved: an image on the site registry's host is
// asked there; a Docker Hub image (docker.io/…) is asked through the site
// registry when it mirrors (hive-repo's pull-through cache answers for the
// upstream), else on registry-1.docker.io; any other host is asked itself.
// The Docker registry protocol is spoken: HEAD
// /v2/NAME/manifests/TAG, answering a Bearer challenge with an anonymous
// token from the realm it names. A reference that already names a digest
// is used as is.
//
// Pin blocks on the network (bounded by Config.Timeout per push); it is
// safe for concurrent use.
package imagepin

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/distribution/reference"
	"google.golang.org/protobuf/proto"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// ErrUnresolved is wrapped by Pin when a tag cannot be resolved (the
// registry does not answer, refuses, or has no such tag). The message
// names the service, its position in the site file and the reason.
var ErrUnresolved = errors.New("image tag cannot be resolved")

// Config configures a Resolver.
type Config struct {
	// RootCAs verifies registries served over TLS (the site CA plus the
	// system roots); nil: the system roots.
	RootCAs *x509.CertPool
	// Timeout bounds one Pin call (default 20 s).
	Timeout time.Duration
	// Transport, when set, replaces the HTTP transport (tests).
	Transport http.RoundTripper
}

// Resolver resolves tags to digests.
type Resolver struct {
	cfg Config
	hc  *http.Client
}

// New returns a Resolver.
func New(cfg Config) *Resolver {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 20 * time.Second
	}
	tr := cfg.Transport
	if tr == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12}
		tr = t
	}
	return &Resolver{cfg: cfg, hc: &http.Client{Transport: tr, Timeout: cfg.Timeout}}
}

// Pin returns s itself when it has no services, else a copy whose
// services carry the digest of their image (SwarmService.digest). A
// reference with a digest keeps it; a tag is resolved (at most once per
// distinct reference). Any failure is an error wrapping ErrUnresolved
// naming every service that failed.
func (r *Resolver) Pin(ctx context.Context, s *hivev1.Site) (*hivev1.Site, error) {
	if len(s.GetServices()) == 0 {
		return s, nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	out := proto.Clone(s).(*hivev1.Site)
	cache := map[string]string{}
	failed := map[string]error{}
	var errs []string
	for _, svc := range out.GetServices() {
		svc.Digest = ""
		ref, err := site.ServiceImage(svc.GetImage())
		if err == nil {
			if d, ok := ref.(reference.Digested); ok {
				svc.Digest = d.Digest().String()
				continue
			}
			key := ref.String()
			if dg, ok := cache[key]; ok {
				svc.Digest = dg
				continue
			}
			if err = failed[key]; err == nil {
				var dg string
				dg, err = r.resolve(ctx, s.GetRegistry(), ref.(reference.NamedTagged))
				if err == nil {
					cache[key] = dg
					svc.Digest = dg
					continue
				}
				failed[key] = err
			}
		}
		pos := svc.GetSource()
		if pos != "" {
			pos += ": "
		}
		errs = append(errs, fmt.Sprintf("%sservices.%s.image: %v", pos, svc.GetName(), err))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrUnresolved, strings.Join(errs, "; "))
	}
	return out, nil
}

// manifestTypes are the manifest media types asked for, index first (a
// multi-platform image is pinned by its index, as docker does).
var manifestTypes = []string{
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json",
}

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// Endpoint returns the base URL asked for ref and the repository path
// there.
func Endpoint(reg *hivev1.ServiceRegistry, ref reference.Named) (base, repo string) {
	host, repo := reference.Domain(ref), reference.Path(ref)
	scheme := "https"
	switch {
	case reg.GetAddress() != "" && host == reg.GetAddress():
		if reg.GetInsecure() {
			scheme = "http"
		}
	case host == "docker.io" && reg.GetAddress() != "" && reg.GetMirror():
		host = reg.GetAddress()
		if reg.GetInsecure() {
			scheme = "http"
		}
	case host == "docker.io":
		host = "registry-1.docker.io"
	}
	return scheme + "://" + host, repo
}

func (r *Resolver) resolve(ctx context.Context, reg *hivev1.ServiceRegistry, ref reference.NamedTagged) (string, error) {
	base, repo := Endpoint(reg, ref)
	u := base + "/v2/" + repo + "/manifests/" + ref.Tag()
	resp, err := r.do(ctx, http.MethodHead, u, "")
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized {
		tok, err := r.token(ctx, resp.Header.Get("WWW-Authenticate"), repo)
		if err != nil {
			return "", fmt.Errorf("%s: %w", u, err)
		}
		if resp, err = r.do(ctx, http.MethodHead, u, tok); err != nil {
			return "", err
		}
		resp.Body.Close()
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return "", fmt.Errorf("%s has no tag %q (%s answered 404: push the image first)", reference.FamiliarName(ref), ref.Tag(), base)
	case resp.StatusCode != http.StatusOK:
		return "", fmt.Errorf("HEAD %s: %s", u, resp.Status)
	}
	if dg := resp.Header.Get("Docker-Content-Digest"); digestRE.MatchString(dg) {
		return dg, nil
	}
	// No digest header: hash the manifest itself.
	resp, err = r.do(ctx, http.MethodGet, u, "")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(resp.Body, 4<<20)); err != nil {
		return "", fmt.Errorf("GET %s: %w", u, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func (r *Resolver) do(ctx context.Context, method, u, token string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", strings.Join(manifestTypes, ", "))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("registry unreachable: %w", err)
	}
	return resp, nil
}

var challengeParam = regexp.MustCompile(`(\w+)="([^"]*)"`)

// token answers a Bearer challenge with an anonymous pull token.
func (r *Resolver) token(ctx context.Context, challenge, repo string) (string, error) {
	scheme, params, _ := strings.Cut(challenge, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", fmt.Errorf("registry wants %q authentication; only anonymous bearer tokens are used", scheme)
	}
	p := map[string]string{}
	for _, m := range challengeParam.FindAllStringSubmatch(params, -1) {
		p[m[1]] = m[2]
	}
	realm, err := url.Parse(p["realm"])
	if err != nil || (realm.Scheme != "https" && realm.Scheme != "http") {
		return "", fmt.Errorf("challenge realm %q is not an http(s) URL", p["realm"])
	}
	q := realm.Query()
	if p["service"] != "" {
		q.Set("service", p["service"])
	}
	q.Set("scope", "repository:"+repo+":pull")
	realm.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, realm.String(), nil)
	if err != nil {
		return "", err
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("anonymous pull token refused: %s (does the registry allow anonymous pulls?)", resp.Status)
	}
	var t struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&t); err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	if t.Token == "" {
		t.Token = t.AccessToken
	}
	if t.Token == "" {
		return "", errors.New("token: empty")
	}
	return t.Token, nil
}
