package coordinator

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// The audit log (docs/operations.md, "Audit log"): every write an API
// call makes is recorded in the same raft entry as the write. Server.apply
// calls withAudit, so a new command that goes through commit/apply from an
// RPC handler is audited without further work; summarizers below give the
// known commands a readable summary, and any other command gets one from
// its scalar fields (secret-like fields and bytes never included).

// unaudited are command bodies that are not operator writes: agents'
// reports and registrations, a leader recording its own address.
var unaudited = map[string]bool{
	"report_batch":       true,
	"node_upsert":        true,
	"coordinator_upsert": true,
}

// unauditedRPCs are the agents' data-plane calls: what they write (a
// published secret, a registration) is the agent's own state.
// Certificates the CA signs for agents (RenewCertificate,
// IssueServiceCertificate) are not state writes: those handlers record an
// audit-only entry (auditOnlyErr) before handing the certificate out.
var unauditedRPCs = map[string]bool{
	coordSvc + "Report":         true,
	coordSvc + "ReportStream":   true,
	coordSvc + "WatchNodeState": true,
	coordSvc + "GetNodeState":   true,
	coordSvc + "ReportPlan":     true,
}

// onBehalfKey is the metadata a coordinator sends with an RPC it
// forwards to the leader (AddPeer, RemovePeer): the identity of its own
// caller, believed only from a coordinator's certificate.
const onBehalfKey = "x-hive-on-behalf-of"

// forwardCtx returns ctx for forwarding the call of ctx to the leader,
// carrying the caller's identity for the audit log.
func forwardCtx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, onBehalfKey, auditIdentity(ctx))
}

// auditIdentity names the caller of ctx for the audit log: its
// certificate identity, or for a call a coordinator forwarded, the
// identity it names as its own caller.
func auditIdentity(ctx context.Context) string {
	id := callerFrom(ctx)
	if id.Kind == pki.KindCoordinator {
		if md, ok := metadata.FromIncomingContext(ctx); ok {
			if v := md.Get(onBehalfKey); len(v) == 1 && v[0] != "" && len(v[0]) <= 256 && !strings.ContainsAny(v[0], "\r\n") {
				return v[0]
			}
		}
	}
	switch {
	case id.Name == "":
		return "anonymous"
	case id == devIdentity:
		return "dev"
	}
	return id.String()
}

// withAudit sets c.Audit from the call of ctx, unless c has one already
// (forwarded), is not an operator write, or ctx is not an API call.
func withAudit(ctx context.Context, c *hivev1.Command) {
	if c.GetAudit() != nil {
		return
	}
	method, ok := grpc.Method(ctx)
	if !ok || unauditedRPCs[method] || !strings.HasPrefix(method, coordSvc) {
		return
	}
	name := commandName(c)
	if unaudited[name] {
		return
	}
	c.Audit = &hivev1.AuditInfo{Identity: auditIdentity(ctx), Rpc: method, Summary: auditSummary(c)}
}

// auditOnly records an audit entry for a write that is not a raft
// command (a raft peer added): an ignorable command with no body.
func (s *Server) auditOnly(ctx context.Context, summary string) {
	if err := s.auditOnlyErr(ctx, summary); err != nil {
		s.log.Warn("could not record an audit entry", "summary", summary, "err", err)
	}
}

// auditOnlyErr is auditOnly for a handler that must not go on unless
// the entry is committed (a certificate is handed out only once its
// issue is on record).
func (s *Server) auditOnlyErr(ctx context.Context, summary string) error {
	method, _ := grpc.Method(ctx)
	return s.auditAs(ctx, auditIdentity(ctx), method, summary)
}

// auditAs records an audit-only entry with an explicit identity and
// "rpc" (e.g. the dashboard's "POST /ui/login").
func (s *Server) auditAs(ctx context.Context, identity, rpc, summary string) error {
	c := &hivev1.Command{Ignorable: true, Audit: &hivev1.AuditInfo{Identity: identity, Rpc: rpc, Summary: truncate(summary, 400)}}
	_, _, err := s.apply(ctx, c)
	return err
}

// tokenIdentity is the audit identity of a bootstrap token's caller
// (RequestCertificate has no client certificate): the first 12 hex
// digits of the token's sha256, as the token's creation entry shows them.
func tokenIdentity(sha string) string { return "bootstrap-token:" + truncateNoMark(sha, 12) }

func truncateNoMark(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// commandName is the body's oneof field name ("push", ...), "" for none.
func commandName(c *hivev1.Command) string {
	m := c.ProtoReflect()
	fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("body"))
	if fd == nil {
		return ""
	}
	return string(fd.Name())
}

// summarizers give known commands a readable summary.
var summarizers = map[string]func(c *hivev1.Command) string{
	"push": func(c *hivev1.Command) string {
		p := c.GetPush()
		s := fmt.Sprintf("push sha256 %.12s on base generation %d", p.GetGeneration().GetSha256(), p.GetBaseGeneration())
		if p.GetForce() {
			s += " (forced)"
		}
		return s + messageSuffix(p.GetGeneration().GetMessage())
	},
	"rollback": func(c *hivev1.Command) string {
		r := c.GetRollback()
		return fmt.Sprintf("rollback to generation %d", r.GetTarget()) + messageSuffix(r.GetMessage())
	},
	"secret_set":    func(c *hivev1.Command) string { return "set secret " + c.GetSecretSet().GetName() },
	"secret_delete": func(c *hivev1.Command) string { return "delete secret " + c.GetSecretDelete().GetName() },
	"peer_remove":   func(c *hivev1.Command) string { return "remove coordinator " + c.GetPeerRemove().GetName() },
	"bootstrap_token_create": func(c *hivev1.Command) string {
		t := c.GetBootstrapTokenCreate()
		target := "node " + t.GetNode()
		if t.GetNodePattern() != "" {
			target = "nodes " + t.GetNodePattern()
		}
		s := fmt.Sprintf("create bootstrap token for %s expiring %s", target, t.GetExpires().AsTime().UTC().Format(time.RFC3339))
		if len(t.GetLabels()) > 0 {
			s += " with labels " + pki.FormatLabels(t.GetLabels())
		}
		if t.GetReplace() {
			s += " (replace)"
		}
		return s + " (token " + tokenIdentity(t.GetTokenSha256()) + ")"
	},
	"bootstrap_token_redeem": func(c *hivev1.Command) string {
		return "redeem a bootstrap token for node " + c.GetBootstrapTokenRedeem().GetNode()
	},
	"node_label": func(c *hivev1.Command) string {
		l := c.GetNodeLabel()
		var parts []string
		for _, k := range sortedKeys(l.GetSet()) {
			parts = append(parts, k+"="+l.GetSet()[k])
		}
		for _, k := range l.GetRemove() {
			parts = append(parts, k+"-")
		}
		return fmt.Sprintf("label node %s %s", l.GetName(), strings.Join(parts, " "))
	},
	"node_revoke": func(c *hivev1.Command) string {
		r := c.GetNodeRevoke()
		s := "revoke node " + r.GetNode()
		if r.GetCutoff() {
			s += " (every certificate issued so far)"
		}
		if len(r.GetSerials()) > 0 {
			s += " serials " + strings.Join(r.GetSerials(), ",")
		}
		return s + reasonSuffix(r.GetReason())
	},
	"node_remove": func(c *hivev1.Command) string {
		r := c.GetNodeRemove()
		return "remove node " + r.GetNode() + reasonSuffix(r.GetReason())
	},
	"rollout_push": func(c *hivev1.Command) string {
		r := c.GetRolloutPush()
		p := r.GetPush()
		nodes := 0
		for _, w := range r.GetWaves() {
			nodes += len(w.GetNodes())
		}
		s := fmt.Sprintf("push sha256 %.12s on base generation %d in %d waves over %d nodes", p.GetGeneration().GetSha256(), p.GetBaseGeneration(), len(r.GetWaves()), nodes)
		if p.GetForce() {
			s += " (forced)"
		}
		return s + messageSuffix(p.GetGeneration().GetMessage())
	},
	"rollout_wave": func(c *hivev1.Command) string {
		w := c.GetRolloutWave()
		verb := "open"
		if w.GetPromote() {
			verb = "promote: open"
		}
		return fmt.Sprintf("%s wave %d of the rollout of generation %d", verb, w.GetWave()+1, w.GetGeneration())
	},
	"rollout_pause": func(c *hivev1.Command) string {
		p := c.GetRolloutPause()
		return fmt.Sprintf("pause the rollout of generation %d", p.GetGeneration()) + reasonSuffix(p.GetReason())
	},
	"rollout_resume": func(c *hivev1.Command) string {
		return fmt.Sprintf("resume the rollout of generation %d", c.GetRolloutResume().GetGeneration())
	},
	"rollout_rollback": func(c *hivev1.Command) string {
		r := c.GetRolloutRollback()
		verb := "roll back"
		if r.GetAbort() {
			verb = "abort"
		}
		return fmt.Sprintf("%s the rollout of generation %d", verb, r.GetGeneration()) + reasonSuffix(r.GetReason())
	},
}

func messageSuffix(m string) string {
	if m == "" {
		return ""
	}
	return fmt.Sprintf(": %q", truncate(m, 200))
}

func reasonSuffix(r string) string {
	if r == "" {
		return ""
	}
	return fmt.Sprintf(" (reason %q)", truncate(r, 200))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// auditSummary describes c for the audit log.
func auditSummary(c *hivev1.Command) string {
	name := commandName(c)
	if f := summarizers[name]; f != nil {
		return f(c)
	}
	return genericSummary(name, c)
}

// secretish are field-name parts never shown in a generic summary.
var secretish = []string{"secret", "sealed", "token", "password", "key", "value", "data", "content"}

// genericSummary is "<command> field=value ..." over the body's set
// scalar fields (strings, numbers, bools, enums; repeated ones joined),
// leaving out bytes and any field whose name looks secret.
func genericSummary(name string, c *hivev1.Command) string {
	m := c.ProtoReflect()
	fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("body"))
	if fd == nil || fd.Message() == nil {
		return strings.ReplaceAll(name, "_", " ")
	}
	body := m.Get(fd).Message()
	var parts []string
	body.Range(func(f protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		fname := string(f.Name())
		for _, s := range secretish {
			if strings.Contains(fname, s) {
				return true
			}
		}
		if f.IsMap() || f.Kind() == protoreflect.BytesKind || f.Kind() == protoreflect.MessageKind || f.Kind() == protoreflect.GroupKind {
			return true
		}
		if f.IsList() {
			l := v.List()
			var vals []string
			for i := 0; i < l.Len() && i < 20; i++ {
				vals = append(vals, scalarString(f, l.Get(i)))
			}
			parts = append(parts, fname+"="+strings.Join(vals, ","))
			return true
		}
		parts = append(parts, fname+"="+scalarString(f, v))
		return true
	})
	sort.Strings(parts)
	return truncate(strings.TrimSpace(strings.ReplaceAll(name, "_", " ")+" "+strings.Join(parts, " ")), 400)
}

func scalarString(f protoreflect.FieldDescriptor, v protoreflect.Value) string {
	if f.Kind() == protoreflect.EnumKind {
		if ev := f.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return string(ev.Name())
		}
	}
	s := v.String()
	if f.Kind() == protoreflect.StringKind {
		s = truncate(s, 120)
		if strings.ContainsAny(s, " \t\n\"") {
			s = fmt.Sprintf("%q", s)
		}
	}
	return s
}

// ListAudit lists the audit log from this server's state.
func (a *api) ListAudit(ctx context.Context, req *hivev1.ListAuditRequest) (*hivev1.ListAuditResponse, error) {
	var since time.Time
	if req.GetSince() != nil {
		if err := req.GetSince().CheckValid(); err != nil {
			return nil, invalid("since: %v", err)
		}
		since = req.GetSince().AsTime()
	}
	st := a.s.fsm.Store()
	entries, truncated := newestFitting(st.Audit(since, int(req.GetLimit())), maxAuditResponseBytes)
	return &hivev1.ListAuditResponse{Entries: entries, Index: st.Index(), Truncated: truncated}, nil
}

// newestFitting returns the newest entries whose encoding fits max bytes
// (keeping the answer under what a default gRPC client receives, 4 MiB),
// and whether older ones were left out.
func newestFitting(entries []*hivev1.AuditEntry, max int) ([]*hivev1.AuditEntry, bool) {
	size, i := 0, len(entries)
	for i > 0 && size+proto.Size(entries[i-1])+8 <= max {
		size += proto.Size(entries[i-1]) + 8
		i--
	}
	return entries[i:], i > 0
}

// maxAuditResponseBytes bounds a ListAudit answer.
const maxAuditResponseBytes = 3 << 20
