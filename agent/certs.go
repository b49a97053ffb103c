package agent

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Service certificates (the certificate resource kind, package
// converge/certs). The provider is built with the engine, before the
// agent exists; certIssuer lets it reach the coordinators through the
// agent once New has bound it: over the watch's mutual-TLS connection, or
// a connection dialled for the call. The provider's earliest renewal time
// shortens the run loop's wait (nextRun), so a certificate is renewed at
// two thirds of its lifetime even when the drift interval is longer.

// errNoAgent: the engine runs without an agent (tests, hive-agent --once
// before New).
var errNoAgent = errors.New("no agent to reach the coordinators")

// certIssuer implements certs.Issuer through an Agent.
type certIssuer struct{ a atomic.Pointer[Agent] }

// IssueServiceCertificate asks a coordinator for the certificate name of
// this node's state, for the key of csrPEM.
func (c *certIssuer) IssueServiceCertificate(ctx context.Context, name string, csrPEM []byte) ([]byte, []byte, error) {
	a := c.a.Load()
	if a == nil {
		return nil, nil, errNoAgent
	}
	conn := (*client.Conn)(nil)
	if h := a.conn.Load(); h != nil {
		conn = h.conn
	} else {
		addrs := a.candidates("")
		if len(addrs) == 0 {
			return nil, nil, client.ErrUnreachable
		}
		var err error
		if conn, err = client.Dial(ctx, a.clientConfig(addrs)); err != nil {
			return nil, nil, err
		}
		defer conn.Close()
	}
	resp, err := conn.IssueServiceCertificate(ctx, &hivev1.IssueServiceCertificateRequest{Name: name, Csr: csrPEM})
	if err != nil {
		return nil, nil, err
	}
	return resp.GetCertificate(), resp.GetCa(), nil
}

// minRenewWait keeps a certificate that cannot be renewed (coordinators
// unreachable) from making the run loop spin.
const minRenewWait = time.Second

// nextRun is how long the run loop waits for its next drift check: the
// jittered interval, or less when a service certificate is due sooner.
func (a *Agent) nextRun() time.Duration {
	d := jitter(a.cfg.Interval, 10)
	if a.deps.NextDue == nil {
		return d
	}
	if t := a.deps.NextDue(); !t.IsZero() {
		return min(d, max(time.Until(t), minRenewWait))
	}
	return d
}
