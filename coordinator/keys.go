package coordinator

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/hivefleet/hive/coordinator/keyring"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// GetKeys hands this server's keyring keys to another coordinator (only
// coordinators may call ClusterService; the keys travel over mutual TLS and
// never through the raft log).
func (c *cluster) GetKeys(ctx context.Context, req *hivev1.GetKeysRequest) (*hivev1.GetKeysResponse, error) {
	resp := &hivev1.GetKeysResponse{}
	for _, k := range c.s.keyring.Export(req.GetIds()) {
		resp.Keys = append(resp.Keys, &hivev1.KeyringKey{Id: k.ID, Key: k.Key})
	}
	return resp, nil
}

// syncOpener opens sealed secrets with the local keyring and, for a key it
// lacks, fetches the key from the other coordinators first.
type syncOpener struct{ s *Server }

func (o syncOpener) Open(name string, sealed []byte, keyID string) ([]byte, error) {
	v, err := o.s.keyring.Open(name, sealed, keyID)
	if !errors.Is(err, keyring.ErrUnknownKey) {
		return v, err
	}
	ctx, cancel := context.WithTimeout(o.s.ctx, 3*time.Second)
	defer cancel()
	o.s.fetchKeys(ctx, []string{keyID})
	return o.s.keyring.Open(name, sealed, keyID)
}

// missingKeys returns the key ids of stored secrets this keyring lacks.
func (s *Server) missingKeys() []string {
	set := map[string]bool{}
	for _, sec := range s.fsm.Store().Secrets() {
		if !s.keyring.Has(sec.GetKeyId()) {
			set[sec.GetKeyId()] = true
		}
	}
	out := make([]string, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// fetchKeys asks the other coordinators for the given keys, adds those it
// gets to the keyring and saves the keyring file.
func (s *Server) fetchKeys(ctx context.Context, ids []string) {
	if len(ids) == 0 {
		return
	}
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	want := map[string]bool{}
	for _, id := range ids {
		if !s.keyring.Has(id) {
			want[id] = true
		}
	}
	addrs := map[string]bool{}
	for _, c := range s.fsm.Store().Coordinators() {
		if c.GetName() != s.cfg.Name && c.GetGrpcAddr() != "" {
			addrs[c.GetGrpcAddr()] = true
		}
	}
	for _, m := range s.aliveCoordinators() {
		if m.Name != s.cfg.Name && m.Meta.GetGrpcAddr() != "" {
			addrs[m.Meta.GetGrpcAddr()] = true
		}
	}
	added := 0
	for addr := range addrs {
		if len(want) == 0 {
			break
		}
		conn, err := s.forwardConn(addr)
		if err != nil {
			continue
		}
		req := &hivev1.GetKeysRequest{}
		for id := range want {
			req.Ids = append(req.Ids, id)
		}
		resp, err := hivev1.NewClusterServiceClient(conn).GetKeys(ctx, req)
		if err != nil {
			s.log.Debug("fetch keyring keys", "from", addr, "err", err)
			continue
		}
		for _, k := range resp.GetKeys() {
			if err := s.keyring.Import(keyring.Key{ID: k.GetId(), Key: k.GetKey()}); err != nil {
				s.log.Warn("keyring key from another coordinator refused", "from", addr, "err", err)
				continue
			}
			delete(want, k.GetId())
			added++
		}
	}
	if added > 0 {
		if err := s.keyring.Save(s.keyringPath); err != nil {
			s.log.Error("save keyring with keys fetched from other coordinators", "err", err)
		}
		s.log.Info("fetched secret keys from other coordinators", "keys", added)
	}
	if len(want) > 0 {
		s.log.Warn("secret keys not found on any reachable coordinator; secrets sealed with them cannot be delivered", "missing", len(want))
	}
}

// keySyncLoop fetches missing keys whenever secrets change and every 30 s,
// so that every server (and every backup of its keyring) can open every
// secret before a node asks for it.
func (s *Server) keySyncLoop(ctx context.Context) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		wake := s.hub.wait()
		if ids := s.missingKeys(); len(ids) > 0 {
			fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			s.fetchKeys(fctx, ids)
			cancel()
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-t.C:
		}
	}
}
