package certs

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/hivefleet/hive/converge"
)

// trustStore is where one family keeps its anchors and its bundle.
type trustStore struct {
	anchor string   // the file hive writes
	bundle string   // the extracted bundle the tool writes
	tool   []string // command that rebuilds the bundle
}

var stores = map[converge.Family]trustStore{
	converge.FamilyDebian: {
		anchor: "/usr/local/share/ca-certificates/hive-site.crt",
		bundle: "/etc/ssl/certs/ca-certificates.crt",
		tool:   []string{"update-ca-certificates"},
	},
	converge.FamilyRHEL: {
		anchor: "/etc/pki/ca-trust/source/anchors/hive-site.pem",
		bundle: "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
		tool:   []string{"update-ca-trust", "extract"},
	},
}

// TrustConfig configures the ca_trust provider.
type TrustConfig struct {
	// CAFile is the site CA (the agent's --tls-ca).
	CAFile string
}

// Trust is the ca_trust provider.
type Trust struct{ cfg TrustConfig }

var _ converge.Pruner = (*Trust)(nil)

// NewTrust returns a ca_trust provider.
func NewTrust(cfg TrustConfig) *Trust { return &Trust{cfg: cfg} }

// Kind implements converge.Provider.
func (t *Trust) Kind() string { return KindCaTrust }

type trustPlan struct {
	store  trustStore
	anchor string // host path
	pem    []byte // nil: remove the anchor
}

func (t *Trust) store(env *converge.Env) (trustStore, error) {
	s, ok := stores[env.Family]
	if !ok {
		return trustStore{}, fmt.Errorf("no trust store known for OS family %q (want debian or rhel)", env.Family)
	}
	return s, nil
}

// caPEM returns the site CA certificates, re-encoded (one canonical PEM
// block each).
func (t *Trust) caPEM() ([]byte, error) {
	if t.cfg.CAFile == "" {
		return nil, errors.New("the agent has no site CA file (--tls-ca); nothing to trust")
	}
	data, err := os.ReadFile(t.cfg.CAFile)
	if err != nil {
		return nil, err
	}
	var out []byte
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.Bytes})...)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate", t.cfg.CAFile)
	}
	return out, nil
}

// Plan implements converge.Provider.
func (t *Trust) Plan(ctx context.Context, env *converge.Env, b *converge.Batch) ([]*converge.Change, error) {
	out := make([]*converge.Change, 0, len(b.Items))
	for _, it := range b.Items {
		ch := &converge.Change{Key: it.Key, Resource: it.Resource}
		out = append(out, ch)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		st, err := t.store(env)
		if err != nil {
			ch.Err = err
			continue
		}
		ca, err := t.caPEM()
		if err != nil {
			ch.Err = err
			continue
		}
		anchor, err := env.Path(st.anchor)
		if err != nil {
			ch.Err = err
			continue
		}
		bundle, err := env.Path(st.bundle)
		if err != nil {
			ch.Err = err
			continue
		}
		cur, _ := os.ReadFile(anchor)
		have, _ := os.ReadFile(bundle)
		switch {
		case !bytes.Equal(cur, ca):
			ch.Summary = "install the site CA as " + st.anchor + " and run " + fmt.Sprint(st.tool)
		case !inBundle(have, ca):
			ch.Summary = "the bundle " + st.bundle + " lacks the site CA: run " + fmt.Sprint(st.tool)
		default:
			ch.Summary = "site CA trusted"
			continue
		}
		ch.Needed = true
		ch.Diff = ch.Summary + "\n"
		ch.Data = &trustPlan{store: st, anchor: anchor, pem: ca}
	}
	return out, nil
}

// inBundle reports whether every certificate of ca is in bundle.
func inBundle(bundle, ca []byte) bool {
	if len(bundle) == 0 {
		return false
	}
	var have [][]byte
	for rest := bundle; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		have = append(have, b.Bytes)
	}
	for rest := ca; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return true
		}
		found := false
		for _, h := range have {
			if bytes.Equal(h, b.Bytes) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
}

// Prune implements converge.Pruner: with no ca_trust resource, an anchor
// hive wrote is removed and the bundle rebuilt.
func (t *Trust) Prune(ctx context.Context, env *converge.Env, present []converge.Item) ([]*converge.Change, error) {
	if len(present) > 0 {
		return nil, nil
	}
	st, ok := stores[env.Family]
	if !ok {
		return nil, nil
	}
	anchor, err := env.Path(st.anchor)
	if err != nil {
		return nil, err
	}
	if _, err := os.Lstat(anchor); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return []*converge.Change{{
		Key: KindCaTrust + ":site", Needed: true,
		Summary: "remove the site CA " + st.anchor + " and run " + fmt.Sprint(st.tool),
		Data:    &trustPlan{store: st, anchor: anchor},
	}}, nil
}

// Apply implements converge.Provider.
func (t *Trust) Apply(ctx context.Context, env *converge.Env, changes []*converge.Change) error {
	for _, ch := range changes {
		pl, ok := ch.Data.(*trustPlan)
		if !ok {
			ch.Err = errors.New("no plan")
			continue
		}
		if pl.pem != nil {
			if err := writeFile(pl.anchor, pl.pem, 0o644, 0, 0); err != nil {
				ch.Err = err
				continue
			}
		} else if err := os.Remove(pl.anchor); err != nil && !errors.Is(err, fs.ErrNotExist) {
			ch.Err = err
			continue
		}
		c := converge.Cmd{Name: pl.store.tool[0], Args: pl.store.tool[1:]}
		if !env.HostRoot() {
			c = converge.Cmd{Name: "chroot", Args: append([]string{env.Root}, pl.store.tool...)}
		}
		if out, err := env.Runner.Run(ctx, c); err != nil {
			ch.Err = fmt.Errorf("%s: %w: %s", c, err, bytes.TrimSpace(append(out.Stderr, out.Stdout...)))
		}
	}
	return nil
}
