// Package load simulates many agents against real coordinators: each
// simulated agent has its own certificate, its own TLS connection, a real
// WatchNodeState stream and sends real reports. hive-load
// (tests/load/cmd/hive-load) is its command line; docs/performance.md
// gives the figures and the commands that produced them.
package load

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Config is one load run.
type Config struct {
	// Addrs are the coordinators' gRPC addresses; agent i connects to
	// Addrs[i % len(Addrs)], pushes go to the last one.
	Addrs []string
	// CA signs the agents' certificates (and the admin certificate when
	// Admin is nil), offline: the same certificates `hivectl tls cert
	// create --agent NAME --label tier=... --ip ...` makes.
	CA *pki.CA
	// Admin is the certificate pushes are made with (nil: an admin
	// certificate "hive-load" issued by CA).
	Admin *tls.Certificate

	// Agents is the number of simulated agents; the first LB are
	// tier=lb, the others tier=web.
	Agents int
	LB     int
	// Prefix of the node names (Prefix-00001, ...).
	Prefix string
	// Connecting at most this many agents at a time (TLS handshake and
	// registration in flight).
	ConnectParallel int

	// Pushes made once every agent watches; PushInterval between them;
	// PushTimeout is how long each waits for every watcher.
	Pushes       int
	PushInterval time.Duration
	PushTimeout  time.Duration
	// Observe, with Pushes 0, watches for this long for generations
	// pushed by an operator (hivectl push) and measures their spread.
	Observe time.Duration

	// Plans made after the pushes (PlanInterval between them), each
	// timed from the Plan call to its answer with every agent's dry run:
	// every simulated agent answers the dry run its watch stream
	// delivers (WatchNodeStateResponse.plan) at once with ReportPlan, as
	// a real agent does after its engine's plan. PlanTimeout is the
	// plan's timeout (PlanRequest.timeout).
	Plans        int
	PlanInterval time.Duration
	PlanTimeout  time.Duration

	// ReportsPerAgent reports sent by every agent, as fast as each is
	// answered (one in flight per agent), after the pushes; the phase
	// stops after ReportDuration at the latest. A node's report rate is
	// limited (coordinator.ReportBurst, 120, then 1/s): keep it below.
	ReportsPerAgent int
	ReportDuration  time.Duration
	// ReportMode is how agents send them: "stream" (default), one
	// ReportStream per agent as the agent does, or "unary", a Report call
	// each (agents before the stream). ReportInflight is how many
	// reports each agent has in flight on its stream (default 1; unary
	// mode always 1).
	ReportMode     string
	ReportInflight int
	// Results per report (resource results, as a converged run sends).
	Results int

	// Coordinators whose RSS and CPU are reported: by process id, by
	// /metrics address (host:port), or both.
	Coordinators []Target
	// Hold keeps every agent connected this long after the figures were
	// taken (to inspect or profile the coordinators); Held, when set, is
	// called with the result before.
	Hold time.Duration
	Held func(*Result)

	// Log receives progress lines (nil: none).
	Log io.Writer
}

func (c *Config) defaults() error {
	if len(c.Addrs) == 0 {
		return errors.New("load: no coordinator address")
	}
	if c.CA == nil {
		return errors.New("load: no CA to issue agent certificates with")
	}
	if c.Agents <= 0 {
		return fmt.Errorf("load: agents %d: want at least 1", c.Agents)
	}
	if c.LB < 0 || c.LB > c.Agents {
		return fmt.Errorf("load: lb %d: want 0..agents (%d)", c.LB, c.Agents)
	}
	if c.Prefix == "" {
		c.Prefix = "load"
	}
	if err := pki.ValidateName(fmt.Sprintf("%s-%05d", c.Prefix, 0)); err != nil {
		return fmt.Errorf("load: prefix %q: %w", c.Prefix, err)
	}
	if c.ConnectParallel <= 0 {
		c.ConnectParallel = 64
	}
	if c.PushTimeout <= 0 {
		c.PushTimeout = 60 * time.Second
	}
	if c.PlanTimeout <= 0 {
		c.PlanTimeout = 30 * time.Second
	}
	if c.ReportDuration <= 0 {
		c.ReportDuration = time.Minute
	}
	switch c.ReportMode {
	case "":
		c.ReportMode = "stream"
	case "stream", "unary":
	default:
		return fmt.Errorf("load: report mode %q: want stream or unary", c.ReportMode)
	}
	if c.ReportInflight <= 0 {
		c.ReportInflight = 1
	}
	if c.ReportMode == "unary" && c.ReportInflight != 1 {
		return fmt.Errorf("load: report inflight %d: unary reports are one in flight per agent", c.ReportInflight)
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	return nil
}

// Percentiles of a set of durations.
type Percentiles struct {
	N                  int
	P50, P90, P99, Max time.Duration
}

func percentiles(d []time.Duration) Percentiles {
	if len(d) == 0 {
		return Percentiles{}
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	at := func(p float64) time.Duration { return d[int(float64(len(d)-1)*p)] }
	return Percentiles{N: len(d), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: d[len(d)-1]}
}

func (p Percentiles) String() string {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }
	return fmt.Sprintf("p50 %s ms, p90 %s ms, p99 %s ms, max %s ms (n=%d)", ms(p.P50), ms(p.P90), ms(p.P99), ms(p.Max), p.N)
}

// Usage is a process's CPU time and memory.
type Usage struct {
	Name    string
	CPU     time.Duration // user+system over the measured span
	RSS     int64         // bytes, at the end
	PeakRSS int64         // bytes (VmHWM; 0 when only /metrics was read)
	// From /metrics only: Go heap in use, goroutine stacks, goroutines.
	Heap, Stacks int64
	Goroutines   int
	Leader       bool // raft leader (from /metrics)
	Err          error
}

// Result is what a run measured.
type Result struct {
	Agents  int
	Issue   time.Duration // issuing the certificates
	Connect time.Duration // until every agent had its first state
	// ConnectRetries counts watch attempts that failed and were retried.
	ConnectRetries int64
	// ConnectFailed counts agents that never got their first state
	// (after 30 attempts); they take no further part. ConnectErr is the
	// first one's error.
	ConnectFailed int
	ConnectErr    string

	// Push: per push, acknowledgement and push → every watcher has it.
	PushAck   Percentiles
	Delivery  Percentiles // all deliveries of all pushes
	PerPush   []Percentiles
	Missing   int // deliveries that did not arrive within PushTimeout
	PushErrs  int
	Observed  []Percentiles // generations seen in Observe mode (spread from the first delivery)
	ObservedG []uint64

	// Plans: the Plan call's round trip; nodes that did not answer (or
	// answered with an error) across all plans; failed Plan calls; the
	// agents' ReportPlan calls refused (first message kept).
	PlanRTT       Percentiles
	PlanMissing   int
	PlanErrs      int
	PlanAnswerErr int64
	PlanAnswerMsg string

	// Reports.
	Reports       int64
	ReportErrs    map[string]int64  // by gRPC code
	ReportErrMsg  map[string]string // the first message of each code
	ReportSpan    time.Duration
	ReportsPerSec float64
	ReportLatency Percentiles
	// CPU time during the report phase: hive-load's, and the measured
	// coordinators' together (per committed report, the cost of a report),
	// and each coordinator's (ReportCoord[i].CPU; Leader as of the end).
	ReportClientCPU, ReportCoordCPU time.Duration
	ReportCoord                     []Usage
	ReportMode                      string
	ReportInflight                  int

	// StreamsLost are watch streams that ended before the run did.
	StreamsLost int64
	LostErr     string

	Client       Usage
	Coordinators []Usage
	// CoordinatorsBefore is their usage before the agents connected.
	CoordinatorsBefore []Usage
	Wall               time.Duration
	LoadAvg            string
}

// Errors is the number of errors of every kind (zero for a clean run).
func (r *Result) Errors() int64 {
	n := int64(r.Missing+r.PushErrs+r.ConnectFailed+r.PlanMissing+r.PlanErrs) + r.StreamsLost + r.PlanAnswerErr
	for _, c := range r.ReportErrs {
		n += c
	}
	return n
}

type delivery struct {
	gen uint64
	at  time.Time
}

type agent struct {
	i       int
	name    string
	tier    string
	addr    string
	ip      string
	cert    tls.Certificate
	conn    *grpc.ClientConn
	client  hivev1.CoordinatorServiceClient
	started time.Time

	gen  atomic.Uint64 // latest generation received
	mu   sync.Mutex
	hist []delivery
	hash string
	seq  uint64
}

func (a *agent) record(st *hivev1.NodeState, at time.Time) {
	a.mu.Lock()
	a.hist = append(a.hist, delivery{gen: st.GetGeneration(), at: at})
	a.hash = st.GetHash()
	a.mu.Unlock()
	a.gen.Store(st.GetGeneration())
}

// firstAt returns when a first received a generation >= g.
func (a *agent) firstAt(g uint64) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, d := range a.hist {
		if d.gen >= g {
			return d.at, true
		}
	}
	return time.Time{}, false
}

// Run issues the agents' certificates, connects them (each its own TLS
// connection and watch stream), makes the pushes (or observes), sends the
// reports, and returns the figures. It returns an error only when the run
// could not take place; errors during it are counted in the Result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	res := &Result{Agents: cfg.Agents, ReportErrs: map[string]int64{}, ReportErrMsg: map[string]string{}}
	start := time.Now()
	cpu0 := selfCPU()
	coord0 := coordUsage(ctx, cfg)
	pool := x509.NewCertPool()
	pool.AddCert(cfg.CA.Cert)

	fmt.Fprintf(cfg.Log, "issuing %d agent certificates\n", cfg.Agents)
	agents, err := issueAgents(cfg)
	if err != nil {
		return nil, err
	}
	res.Issue = time.Since(start)
	all := agents
	admin := cfg.Admin
	if admin == nil {
		iss, err := cfg.CA.Issue(pki.CertRequest{Identity: pki.Identity{Kind: pki.KindAdmin, Name: "hive-load"}})
		if err != nil {
			return nil, err
		}
		c, err := tls.X509KeyPair(iss.CertPEM, iss.KeyPEM)
		if err != nil {
			return nil, err
		}
		admin = &c
	}

	wctx, stop := context.WithCancel(ctx)
	defer stop()
	var done atomic.Bool // the run is over: streams ending now are not lost
	var lostMu sync.Mutex
	var wg sync.WaitGroup
	defer func() {
		done.Store(true)
		stop()
		wg.Wait()
		for _, a := range all {
			if a.conn != nil {
				a.conn.Close()
			}
		}
	}()

	fmt.Fprintf(cfg.Log, "connecting %d agents to %s (%d at a time)\n", cfg.Agents, strings.Join(cfg.Addrs, ", "), cfg.ConnectParallel)
	t0 := time.Now()
	sem := make(chan struct{}, cfg.ConnectParallel)
	var ready sync.WaitGroup
	failed := make([]bool, len(agents))
	var connMu sync.Mutex
	for _, a := range agents {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		ready.Add(1)
		wg.Add(1)
		go func(a *agent) {
			defer wg.Done()
			st, err := a.connect(wctx, pool, &res.ConnectRetries)
			<-sem
			ready.Done()
			if err != nil {
				connMu.Lock()
				failed[a.i] = true
				res.ConnectFailed++
				if res.ConnectErr == "" {
					res.ConnectErr = fmt.Sprintf("%s: %v", a.name, err)
				}
				connMu.Unlock()
				return
			}
			for {
				m, err := st.Recv()
				if err != nil {
					if !done.Load() && wctx.Err() == nil {
						atomic.AddInt64(&res.StreamsLost, 1)
						lostMu.Lock()
						if res.LostErr == "" {
							res.LostErr = fmt.Sprintf("%s: %v", a.name, err)
						}
						lostMu.Unlock()
					}
					return
				}
				if pl := m.GetPlan(); pl != nil {
					// Answer on a goroutine of its own: the stream keeps
					// being read meanwhile, as the agent's planRunner.
					wg.Add(1)
					go func() {
						defer wg.Done()
						if err := a.answerPlan(wctx, pl); err != nil && wctx.Err() == nil {
							lostMu.Lock()
							res.PlanAnswerErr++
							if res.PlanAnswerMsg == "" {
								res.PlanAnswerMsg = fmt.Sprintf("%s: %v", a.name, err)
							}
							lostMu.Unlock()
						}
					}()
					continue
				}
				if m.GetState() != nil {
					a.record(m.GetState(), time.Now())
				}
			}
		}(a)
	}
	ready.Wait()
	if res.ConnectFailed == len(agents) {
		return nil, fmt.Errorf("no agent could watch: %s", res.ConnectErr)
	}
	if res.ConnectFailed > 0 {
		fmt.Fprintf(cfg.Log, "%d agents could not watch (the first: %s); going on without them\n", res.ConnectFailed, res.ConnectErr)
		live := agents[:0:0]
		for _, a := range agents {
			if !failed[a.i] {
				live = append(live, a)
			}
		}
		agents = live
	}
	res.Connect = time.Since(t0)
	fmt.Fprintf(cfg.Log, "%d agents watching after %v (%d retries)\n", cfg.Agents, res.Connect.Round(time.Millisecond), res.ConnectRetries)

	// Pushes.
	if cfg.Pushes > 0 {
		if err := push(ctx, cfg, res, agents, pool, admin); err != nil {
			return nil, err
		}
	} else if cfg.Observe > 0 {
		observe(ctx, cfg, res, agents)
	}

	// Plans, every agent answering.
	if cfg.Plans > 0 {
		if err := plans(ctx, cfg, res, agents, pool, admin); err != nil {
			return nil, err
		}
	}

	// Reports, with every stream open.
	if cfg.ReportsPerAgent > 0 {
		c0, u0 := selfCPU(), coordUsage(ctx, cfg)
		reports(ctx, cfg, res, agents)
		res.ReportClientCPU = selfCPU() - c0
		for i, u := range coordUsage(ctx, cfg) {
			if u.Err == nil && u0[i].Err == nil {
				u.CPU -= u0[i].CPU
				res.ReportCoordCPU += u.CPU
			}
			res.ReportCoord = append(res.ReportCoord, u)
		}
	}

	done.Store(true)
	res.Wall = time.Since(start)
	res.Client = Usage{Name: "hive-load", CPU: selfCPU() - cpu0}
	res.Client.RSS, res.Client.PeakRSS = procMem("self")
	coord1 := coordUsage(ctx, cfg)
	for i, u := range coord1 {
		if i < len(coord0) && u.Err == nil && coord0[i].Err == nil {
			u.CPU -= coord0[i].CPU
		}
		res.Coordinators = append(res.Coordinators, u)
	}
	res.CoordinatorsBefore = coord0
	res.LoadAvg = loadAvg()
	if cfg.Hold > 0 {
		if cfg.Held != nil {
			cfg.Held(res)
		}
		fmt.Fprintf(cfg.Log, "holding %d agents connected for %v\n", cfg.Agents, cfg.Hold)
		select {
		case <-time.After(cfg.Hold):
		case <-ctx.Done():
		}
	}
	return res, nil
}

// issueAgents issues every agent's certificate (P-256 key pairs, on every
// core).
func issueAgents(cfg Config) ([]*agent, error) {
	agents := make([]*agent, cfg.Agents)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, runtime.GOMAXPROCS(0))
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= cfg.Agents {
					return
				}
				a := &agent{i: i, name: fmt.Sprintf("%s-%05d", cfg.Prefix, i), tier: "web", addr: cfg.Addrs[i%len(cfg.Addrs)]}
				if i < cfg.LB {
					a.tier = "lb"
				}
				// A documentation-free private address per agent, bound in
				// its certificate (the coordinator checks reported
				// addresses against the certificate's IP SANs).
				ip := net.IPv4(10, byte(i>>16), byte(i>>8), byte(i))
				a.ip = ip.String()
				iss, err := cfg.CA.Issue(pki.CertRequest{
					Identity: pki.Identity{Kind: pki.KindAgent, Name: a.name},
					IPs:      []net.IP{ip},
					Labels:   map[string]string{"tier": a.tier},
				})
				if err == nil {
					a.cert, err = tls.X509KeyPair(iss.CertPEM, iss.KeyPEM)
				}
				if err != nil {
					errs <- fmt.Errorf("issue the certificate of %s: %w", a.name, err)
					return
				}
				a.cert.Leaf = iss.Cert
				agents[i] = a
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return nil, err
	default:
	}
	return agents, nil
}

// tlsConfig is an agent's client TLS: its own certificate, the site CA,
// TLS 1.3 and the coordinator identity check (as pki.ClientTLSConfig).
func tlsConfig(pool *x509.CertPool, cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{"h2"},
		Certificates:       []tls.Certificate{cert},
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := pki.VerifyServer(cs.PeerCertificates, pool, time.Now())
			return err
		},
	}
}

// dial opens one client connection with small buffers: the generator
// holds thousands of them.
func dial(addr string, cfg *tls.Config) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithReadBufferSize(0), grpc.WithWriteBufferSize(4<<10),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10),
		// As hive-agent: a ping every 25 s.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 25 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
	)
}

// connect opens a's connection and watch stream and waits for its first
// state, retrying with backoff like an agent (registration can fail while
// the coordinators are busy with the connection storm).
func (a *agent) connect(ctx context.Context, pool *x509.CertPool, retries *int64) (hivev1.CoordinatorService_WatchNodeStateClient, error) {
	var err error
	a.conn, err = dial(a.addr, tlsConfig(pool, a.cert))
	if err != nil {
		return nil, err
	}
	a.client = hivev1.NewCoordinatorServiceClient(a.conn)
	a.started = time.Now()
	var lastErr error
	for attempt := 0; attempt < 30; attempt++ {
		if attempt > 0 {
			atomic.AddInt64(retries, 1)
			select {
			case <-time.After(time.Duration(100+attempt*100) * time.Millisecond):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		st, err := a.client.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{
			Node: a.name, Labels: map[string]string{"tier": a.tier}, Addresses: []string{a.ip},
			AgentVersion: "hive-load",
		})
		if err != nil {
			lastErr = err
			continue
		}
		m, err := st.Recv()
		if err != nil {
			lastErr = err
			if c := status.Code(err); c == codes.PermissionDenied || c == codes.InvalidArgument || c == codes.Unauthenticated {
				return nil, err
			}
			continue
		}
		a.record(m.GetState(), time.Now())
		return st, nil
	}
	return nil, lastErr
}

// loadSite is the site pushed: web nodes get a package (its version
// changes with every push), a file, and a firewall rule that lists every
// lb node's address; lb nodes get a package.
func loadSite(version string) *hivev1.Site {
	return &hivev1.Site{
		Name: "hive-load",
		Roles: []*hivev1.Role{
			{Name: "lb", Resources: []*hivev1.Resource{
				{Key: "package:haproxy", Kind: &hivev1.Resource_Package{Package: &hivev1.Package{Name: "haproxy", State: hivev1.PackageState_PACKAGE_STATE_PRESENT}}},
			}},
			{Name: "web", Resources: []*hivev1.Resource{
				{Key: "package:nginx", Kind: &hivev1.Resource_Package{Package: &hivev1.Package{Name: "nginx", State: hivev1.PackageState_PACKAGE_STATE_PRESENT, Version: version}}},
				{Key: "file:/etc/app.conf", Requires: []string{"package:nginx"}, Kind: &hivev1.Resource_File{File: &hivev1.File{Path: "/etc/app.conf", State: hivev1.FileState_FILE_STATE_FILE, Content: "workers=4\nversion=" + version + "\n"}}},
				{Key: "firewall:filter", Kind: &hivev1.Resource_Firewall{Firewall: &hivev1.Firewall{Rules: []*hivev1.FirewallRule{
					{Chain: "input", Protocol: "tcp", Ports: []string{"80"}, SourceRoles: []string{"lb"}, Action: hivev1.FirewallAction_FIREWALL_ACTION_ACCEPT},
				}}}},
			}},
		},
		Selectors: []*hivev1.Selector{
			{MatchLabels: map[string]string{"tier": "web"}, Roles: []string{"web"}},
			{MatchLabels: map[string]string{"tier": "lb"}, Roles: []string{"lb"}},
		},
	}
}

func push(ctx context.Context, cfg Config, res *Result, agents []*agent, pool *x509.CertPool, admin *tls.Certificate) error {
	conn, err := dial(cfg.Addrs[len(cfg.Addrs)-1], tlsConfig(pool, *admin))
	if err != nil {
		return err
	}
	defer conn.Close()
	c := hivev1.NewCoordinatorServiceClient(conn)
	var all, acks []time.Duration
	for p := 0; p < cfg.Pushes; p++ {
		if p > 0 && cfg.PushInterval > 0 {
			select {
			case <-time.After(cfg.PushInterval):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		start := time.Now()
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err := c.Push(pctx, &hivev1.PushRequest{
			Site: loadSite(fmt.Sprintf("1.%d.%d", start.Unix(), p)), Force: true,
			Message: fmt.Sprintf("hive-load push %d of %d", p+1, cfg.Pushes),
		})
		cancel()
		if err != nil {
			res.PushErrs++
			fmt.Fprintf(cfg.Log, "push %d: %v\n", p+1, err)
			continue
		}
		ack := time.Since(start)
		acks = append(acks, ack)
		g := resp.GetGeneration()
		deadline := start.Add(cfg.PushTimeout)
		for {
			n := 0
			for _, a := range agents {
				if a.gen.Load() >= g {
					n++
				}
			}
			if n == len(agents) || time.Now().After(deadline) || ctx.Err() != nil {
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		var lat []time.Duration
		for _, a := range agents {
			if at, ok := a.firstAt(g); ok {
				lat = append(lat, at.Sub(start))
			} else {
				res.Missing++
			}
		}
		all = append(all, lat...)
		pp := percentiles(lat)
		res.PerPush = append(res.PerPush, pp)
		fmt.Fprintf(cfg.Log, "push %d: generation %d acknowledged in %.1f ms; push → every watcher: %s\n", p+1, g, float64(ack.Microseconds())/1000, pp)
	}
	res.PushAck = percentiles(acks)
	res.Delivery = percentiles(all)
	return nil
}

// answerPlan answers a plan dry run as an agent whose engine planned
// every resource of the state as a change: the report a real agent's dry
// run sends (dry_run, the planned state's generation and hash, one
// PLANNED result per resource).
func (a *agent) answerPlan(ctx context.Context, pl *hivev1.PlanDryRun) error {
	st := pl.GetState()
	now := timestamppb.Now()
	r := &hivev1.Report{Node: a.name, Generation: st.GetGeneration(), StateHash: st.GetHash(),
		Phase: hivev1.Phase_PHASE_CONVERGED, DryRun: true, Trigger: "plan", Started: now, Finished: now}
	for _, res := range st.GetResources() {
		r.Results = append(r.Results, &hivev1.ResourceResult{Key: res.GetKey(), Outcome: hivev1.Outcome_OUTCOME_PLANNED,
			Cause: hivev1.Cause_CAUSE_CHANGE, Message: "would change", Duration: durationpb.New(50 * time.Microsecond)})
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := a.client.ReportPlan(actx, &hivev1.ReportPlanRequest{PlanId: pl.GetId(), Report: r})
	return err
}

// plans makes cfg.Plans plans of a changed site and times each from the
// Plan call to its answer; every node not answered counts as missing.
func plans(ctx context.Context, cfg Config, res *Result, agents []*agent, pool *x509.CertPool, admin *tls.Certificate) error {
	conn, err := dial(cfg.Addrs[len(cfg.Addrs)-1], tlsConfig(pool, *admin))
	if err != nil {
		return err
	}
	defer conn.Close()
	c := hivev1.NewCoordinatorServiceClient(conn)
	var rtt []time.Duration
	for p := 0; p < cfg.Plans; p++ {
		if p > 0 && cfg.PlanInterval > 0 {
			select {
			case <-time.After(cfg.PlanInterval):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		start := time.Now()
		pctx, cancel := context.WithTimeout(ctx, cfg.PlanTimeout+30*time.Second)
		resp, err := c.Plan(pctx, &hivev1.PlanRequest{
			Site: loadSite(fmt.Sprintf("2.%d.%d", start.Unix(), p)), Timeout: durationpb.New(cfg.PlanTimeout),
		})
		cancel()
		took := time.Since(start)
		if err != nil {
			res.PlanErrs++
			fmt.Fprintf(cfg.Log, "plan %d: %v\n", p+1, err)
			continue
		}
		answered, missing := 0, []string{}
		for _, n := range resp.GetNodes() {
			if n.GetState() == hivev1.PlanNodeState_PLAN_NODE_STATE_ANSWERED && n.GetError() == "" {
				answered++
			} else if len(missing) < 3 {
				missing = append(missing, fmt.Sprintf("%s %s %s", n.GetName(), strings.ToLower(strings.TrimPrefix(n.GetState().String(), "PLAN_NODE_STATE_")), n.GetError()))
			}
		}
		res.PlanMissing += len(agents) - answered
		rtt = append(rtt, took)
		fmt.Fprintf(cfg.Log, "plan %d: %d of %d nodes answered in %.1f ms %v\n", p+1, answered, len(agents), float64(took.Microseconds())/1000, missing)
	}
	res.PlanRTT = percentiles(rtt)
	return nil
}

// observe waits cfg.Observe for generations an operator pushes and
// measures, per generation, the spread from its first delivery to each
// agent's.
func observe(ctx context.Context, cfg Config, res *Result, agents []*agent) {
	fmt.Fprintf(cfg.Log, "observing for %v: push with hivectl now\n", cfg.Observe)
	base := uint64(0)
	for _, a := range agents {
		base = max(base, a.gen.Load())
	}
	end := time.After(cfg.Observe)
	seen := map[uint64]bool{}
	var gens []uint64
loop:
	for {
		select {
		case <-end:
			break loop
		case <-ctx.Done():
			break loop
		case <-time.After(50 * time.Millisecond):
		}
		for _, a := range agents {
			if g := a.gen.Load(); g > base && !seen[g] {
				seen[g] = true
				gens = append(gens, g)
			}
		}
	}
	sort.Slice(gens, func(i, j int) bool { return gens[i] < gens[j] })
	for _, g := range gens {
		var first time.Time
		var ats []time.Time
		for _, a := range agents {
			if at, ok := a.firstAt(g); ok {
				ats = append(ats, at)
				if first.IsZero() || at.Before(first) {
					first = at
				}
			} else {
				res.Missing++
			}
		}
		var lat []time.Duration
		for _, at := range ats {
			lat = append(lat, at.Sub(first))
		}
		pp := percentiles(lat)
		res.Observed = append(res.Observed, pp)
		res.ObservedG = append(res.ObservedG, g)
		fmt.Fprintf(cfg.Log, "generation %d: first delivery → each watcher: %s\n", g, pp)
	}
}

// sampleResults are a converged run's results (the first is changed).
func sampleResults(n int) []*hivev1.ResourceResult {
	keys := []string{"package:nginx", "file:/etc/app.conf", "firewall:filter", "service:nginx", "package:chrony"}
	var out []*hivev1.ResourceResult
	for i := 0; i < n; i++ {
		k := keys[i%len(keys)]
		if i >= len(keys) {
			k = fmt.Sprintf("file:/etc/app/conf.d/%03d.conf", i)
		}
		o := hivev1.Outcome_OUTCOME_OK
		if i == 0 {
			o = hivev1.Outcome_OUTCOME_CHANGED
		}
		out = append(out, &hivev1.ResourceResult{Key: k, Outcome: o, Duration: durationpb.New(time.Duration(i+1) * time.Millisecond)})
	}
	return out
}

func reports(ctx context.Context, cfg Config, res *Result, agents []*agent) {
	res.ReportMode, res.ReportInflight = cfg.ReportMode, cfg.ReportInflight
	fmt.Fprintf(cfg.Log, "reports: %d per agent (%d in all), %s, %d in flight per agent, at most %v\n",
		cfg.ReportsPerAgent, cfg.ReportsPerAgent*len(agents), cfg.ReportMode, cfg.ReportInflight, cfg.ReportDuration)
	results := sampleResults(cfg.Results)
	rctx, cancel := context.WithTimeout(ctx, cfg.ReportDuration)
	defer cancel()
	var ok atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	refused := func(err error) {
		code := status.Code(err).String()
		mu.Lock()
		res.ReportErrs[code]++
		if _, ok := res.ReportErrMsg[code]; !ok {
			res.ReportErrMsg[code] = status.Convert(err).Message()
		}
		mu.Unlock()
	}
	start := time.Now()
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Add(1)
		go func(a *agent) {
			defer wg.Done()
			var mine []time.Duration
			defer func() {
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
			next := func() *hivev1.Report {
				a.mu.Lock()
				a.seq++
				seq, hash := a.seq, a.hash
				a.mu.Unlock()
				t := time.Now()
				return &hivev1.Report{
					Node: a.name, Generation: a.gen.Load(), StateHash: hash, Phase: hivev1.Phase_PHASE_CONVERGED,
					Results: results, AgentVersion: "hive-load", Uptime: durationpb.New(t.Sub(a.started)),
					Started: timestamppb.New(t.Add(-30 * time.Millisecond)), Finished: timestamppb.New(t),
					Trigger: "state", Seq: seq,
				}
			}
			if cfg.ReportMode == "stream" {
				mine = a.streamReports(rctx, cfg, next, refused, &ok)
				return
			}
			for k := 0; k < cfg.ReportsPerAgent && rctx.Err() == nil; k++ {
				t := time.Now()
				_, err := a.client.Report(rctx, &hivev1.ReportRequest{Report: next()})
				if err != nil {
					if rctx.Err() != nil {
						return // the phase's time is up: not an error
					}
					refused(err)
					continue
				}
				mine = append(mine, time.Since(t))
				ok.Add(1)
			}
		}(a)
	}
	wg.Wait()
	res.ReportSpan = time.Since(start)
	res.Reports = ok.Load()
	res.ReportsPerSec = float64(res.Reports) / res.ReportSpan.Seconds()
	res.ReportLatency = percentiles(lat)
	fmt.Fprintf(cfg.Log, "reports: %d committed in %v: %.0f/s; latency %s\n", res.Reports, res.ReportSpan.Round(time.Millisecond), res.ReportsPerSec, res.ReportLatency)
}

// streamReports sends cfg.ReportsPerAgent reports over one ReportStream,
// cfg.ReportInflight at a time, as an agent does; it returns the
// latencies of those accepted (each from its Send to its answer).
func (a *agent) streamReports(ctx context.Context, cfg Config, next func() *hivev1.Report, refused func(error), ok *atomic.Int64) []time.Duration {
	st, err := a.client.ReportStream(ctx)
	if err != nil {
		if ctx.Err() == nil {
			refused(err)
		}
		return nil
	}
	// Send times by seq (1..n), in nanoseconds since start: the receiver
	// reads them, and a network round trip is no happens-before edge.
	sent := make([]atomic.Int64, cfg.ReportsPerAgent+1)
	start := time.Now()
	slots := make(chan struct{}, cfg.ReportInflight)
	var mine []time.Duration
	recvd := make(chan error, 1)
	go func() {
		for {
			resp, err := st.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				recvd <- err
				return
			}
			switch seq := resp.GetSeq(); {
			case seq == 0 || seq >= uint64(len(sent)):
				refused(status.Errorf(codes.Code(resp.GetCode()), "answer with seq %d: %s", seq, resp.GetMessage()))
				continue // the stopping notice: no slot
			case resp.GetAccepted():
				mine = append(mine, time.Since(start)-time.Duration(sent[seq].Load()))
				ok.Add(1)
			default:
				refused(status.Error(codes.Code(resp.GetCode()), resp.GetMessage()))
			}
			<-slots
		}
	}()
	for k := 1; k <= cfg.ReportsPerAgent && ctx.Err() == nil; k++ {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		sent[k].Store(int64(time.Since(start)))
		if err := st.Send(&hivev1.ReportRequest{Seq: uint64(k), Report: next()}); err != nil {
			break // Recv has the stream's error
		}
	}
	_ = st.CloseSend()
	if err := <-recvd; err != nil && ctx.Err() == nil {
		refused(err)
	}
	return mine
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Print writes the figures, one per line.
func (r *Result) Print(w io.Writer) {
	mb := func(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
	fmt.Fprintf(w, "agents:            %d (certificates issued in %v, all watching after %v, %d watch retries)\n",
		r.Agents, r.Issue.Round(time.Millisecond), r.Connect.Round(time.Millisecond), r.ConnectRetries)
	if len(r.PerPush) > 0 || r.PushErrs > 0 {
		fmt.Fprintf(w, "push ack:          %s\n", r.PushAck)
		fmt.Fprintf(w, "push → watchers:   %s over %d pushes\n", r.Delivery, len(r.PerPush))
	}
	for i, p := range r.Observed {
		fmt.Fprintf(w, "generation %d:      first → every watcher: %s\n", r.ObservedG[i], p)
	}
	if r.PlanRTT.N > 0 || r.PlanErrs > 0 {
		fmt.Fprintf(w, "plan round trip:   %s with %d agents answering\n", r.PlanRTT, r.Agents)
	}
	if r.Reports > 0 || len(r.ReportErrs) > 0 {
		fmt.Fprintf(w, "reports:           %d committed in %v: %.0f reports/s with %d streams open (%s, %d in flight per agent); latency %s\n",
			r.Reports, r.ReportSpan.Round(time.Millisecond), r.ReportsPerSec, r.Agents, r.ReportMode, r.ReportInflight, r.ReportLatency)
		if r.Reports > 0 {
			per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(r.Reports) }
			fmt.Fprintf(w, "report CPU:        coordinators %.1f s (%.0f µs per report, %.2f cores), hive-load %.1f s (%.0f µs per report, %.2f cores)\n",
				r.ReportCoordCPU.Seconds(), per(r.ReportCoordCPU), r.ReportCoordCPU.Seconds()/r.ReportSpan.Seconds(),
				r.ReportClientCPU.Seconds(), per(r.ReportClientCPU), r.ReportClientCPU.Seconds()/r.ReportSpan.Seconds())
			var each []string
			for _, u := range r.ReportCoord {
				if u.Err != nil {
					continue
				}
				role := ""
				if u.Leader {
					role = " (leader)"
				}
				each = append(each, fmt.Sprintf("%s%s %.0f µs", u.Name, role, per(u.CPU)))
			}
			if len(each) > 0 {
				fmt.Fprintf(w, "report CPU each:   %s per report\n", strings.Join(each, ", "))
			}
		}
	}
	var errs []string
	if r.ConnectFailed > 0 {
		errs = append(errs, fmt.Sprintf("%d agents never watched (first: %s)", r.ConnectFailed, r.ConnectErr))
	}
	if r.PushErrs > 0 {
		errs = append(errs, fmt.Sprintf("%d failed pushes", r.PushErrs))
	}
	if r.Missing > 0 {
		errs = append(errs, fmt.Sprintf("%d deliveries missing", r.Missing))
	}
	if r.PlanErrs > 0 {
		errs = append(errs, fmt.Sprintf("%d failed plans", r.PlanErrs))
	}
	if r.PlanMissing > 0 {
		errs = append(errs, fmt.Sprintf("%d plan answers missing", r.PlanMissing))
	}
	if r.PlanAnswerErr > 0 {
		errs = append(errs, fmt.Sprintf("%d plan answers refused (first: %s)", r.PlanAnswerErr, r.PlanAnswerMsg))
	}
	if r.StreamsLost > 0 {
		errs = append(errs, fmt.Sprintf("%d watch streams lost (first: %s)", r.StreamsLost, r.LostErr))
	}
	codes := make([]string, 0, len(r.ReportErrs))
	for c := range r.ReportErrs {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	for _, c := range codes {
		errs = append(errs, fmt.Sprintf("%d reports refused (%s; the first: %q)", r.ReportErrs[c], c, r.ReportErrMsg[c]))
	}
	if len(errs) == 0 {
		errs = []string{"none"}
	}
	fmt.Fprintf(w, "errors:            %s\n", strings.Join(errs, "; "))
	fmt.Fprintf(w, "hive-load:         CPU %.1f s over %.1f s wall (%.2f cores), RSS %s, peak %s\n",
		r.Client.CPU.Seconds(), r.Wall.Seconds(), r.Client.CPU.Seconds()/r.Wall.Seconds(), mb(r.Client.RSS), mb(r.Client.PeakRSS))
	var sum, sumBefore int64
	ok := 0
	for i, c := range r.Coordinators {
		if c.Err != nil {
			fmt.Fprintf(w, "%-18s %v\n", c.Name+":", c.Err)
			continue
		}
		peak := ""
		if c.PeakRSS > 0 {
			peak = ", peak " + mb(c.PeakRSS)
		}
		before := int64(0)
		if i < len(r.CoordinatorsBefore) {
			before = r.CoordinatorsBefore[i].RSS
		}
		gostats := ""
		if c.Goroutines > 0 {
			gostats = fmt.Sprintf("; Go heap in use %s, stacks %s, %d goroutines", mb(c.Heap), mb(c.Stacks), c.Goroutines)
		}
		fmt.Fprintf(w, "%-18s RSS %s%s (%s before the agents), CPU %.1f s during the run%s\n",
			c.Name+":", mb(c.RSS), peak, mb(before), c.CPU.Seconds(), gostats)
		sum += c.RSS
		sumBefore += before
		ok++
	}
	if ok > 0 {
		// Every coordinator holds every node's records; the watchers are
		// spread over them.
		per := func(b int64) float64 { return float64(b) / (1 << 20) / float64(r.Agents) * 1000 }
		fmt.Fprintf(w, "coordinators:      RSS %s together, %.0f MiB per 1,000 nodes (%.0f MiB per 1,000 nodes above their RSS before the agents)\n",
			mb(sum), per(sum), per(sum-sumBefore))
	}
	fmt.Fprintf(w, "load average:      %s\n", r.LoadAvg)
}
