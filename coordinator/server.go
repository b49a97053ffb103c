// Package coordinator is hive-coordinator's server: a hashicorp/raft node
// (raft-boltdb log and stable store, file snapshots under the data
// directory, TCP transport with mutual TLS outside --dev) whose FSM
// (coordinator/fsm over coordinator/state) holds the site's generations,
// the node registry, every node's last report, the sealed secrets and the
// bootstrap tokens; and the gRPC CoordinatorService and ClusterService in
// front of it.
//
// Any server takes any call. Writes go through the raft-node layer
// (package raftnode: apply or forward, typed outcomes, consistent reads,
// the leader-change notifier, health): on the leader they are proposed to
// raft and acknowledged only once committed; on a follower they are
// forwarded to the leader's ClusterService.Apply, whose gRPC address
// followers read from the replicated coordinator records (every new leader
// records its own address first thing). A write is answered
// only once the answering server's own FSM has applied it (report batches
// excepted), so a read through the same server right after sees it. Reads
// (history, render, watch, status) are answered from the local FSM.
//
// gRPC keepalive: clients may ping every Config.KeepaliveMinTime (10s),
// also without an open stream; the server pings a connection idle for
// KeepaliveTime (30s) and closes it after KeepaliveTimeout (10s) unanswered.
// Raft servers are added by the leader only after they proved a matching
// coordinator certificate over mutual TLS, as non-voters, and promoted to
// voters once caught up (join.go); addVoter retries across leadership
// changes.
//
// Goroutines: Run starts the gRPC and HTTP servers, the leader loop
// (records the leader's address, updates metrics), the report batcher
// (group-commits agents' reports into ReportBatchCommand entries) and the
// watch hub (one broadcast channel; FSM changes wake every watch stream,
// registry changes debounced). The FSM's OnApply hook runs on raft's FSM
// goroutine and only closes a channel or arms a timer: it never blocks.
// Watch streams render through one shared coordinator/render.Renderer.
//
// Authorisation (outside --dev) uses the caller's certificate identity
// (package pki): agents may only watch, render and report as themselves;
// admins may do everything else; ClusterService is for coordinators only.
//
// What callers send is bounded before it reaches the batcher or raft
// (limits.go, package limits): agents' and unauthenticated requests are
// capped by wire size, a report must fit its bounds and its node's rate
// (a token bucket per agent certificate), and the batcher holds a bounded
// number of reports and bytes and cuts raft entries at a byte budget.
package coordinator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/hivefleet/hive/coordinator/imagepin"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/hivefleet/hive/coordinator/fsm"
	"github.com/hivefleet/hive/coordinator/keyring"
	"github.com/hivefleet/hive/coordinator/raftnode"
	"github.com/hivefleet/hive/coordinator/render"
	"github.com/hivefleet/hive/gossip"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/version"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
)

// Server is one coordinator.
type Server struct {
	cfg  Config
	log  *slog.Logger
	root *slog.Logger

	fsm         *fsm.FSM
	raft        *raft.Raft
	node        *raftnode.Node // apply, forward, consistent reads, leader changes, health
	layer       *streamLayer
	transport   *raft.NetworkTransport
	boltStore   *raftboltdb.BoltStore
	logCache    *raftnode.LogCache
	keyring     *keyring.Keyring
	keyMu       sync.Mutex // serialises key fetches and keyring saves
	keyringPath string
	renderer    *render.Renderer
	pinner      *imagepin.Resolver // service image tags → digests at push
	hub         *hub
	ops         *ops         // events and webhooks (events.go, webhooks.go)
	statusw     *statusWatch // blocking status reads, in-memory phases (statuswait.go)
	plans       planBook     // hivectl plan: plans kept, nodes watching here (plan.go)
	batcher     *batcher
	reportLimit *rateLimiter // reports per agent identity
	metrics     *metrics
	ca          *pki.CA
	conns       *connTracker   // client connections by certificate (revoke.go)
	handshakes  *handshakeGate // TLS handshakes in progress (handshake.go)
	certLimit   *rateLimiter   // RequestCertificate, per source address
	svcLimit    *rateLimiter   // IssueServiceCertificate, per agent (certs.go)
	gossip      *gossip.Gossip
	existing    bool // raft had state when the server started
	// reconcileRounds counts reconcileLoop's rounds as leader (tests wait
	// for rounds instead of sleeping).
	reconcileRounds atomic.Uint64
	// rollouts is the leader's rollout gate (rollout.go).
	rollouts rolloutGate
	// rebootRunning: runReboots is running (reboot.go).
	rebootRunning atomic.Bool

	grpcLn   net.Listener
	httpLn   net.Listener
	grpcSrv  *grpc.Server
	httpSrv  *http.Server
	health   *health.Server
	grpcAddr string // advertised

	clientTLS *tls.Config
	fwdMu     sync.Mutex
	fwdConns  map[string]*grpc.ClientConn

	notifyCh chan bool
	// noTransfer skips the leadership hand-over on stop (crash simulation).
	noTransfer atomic.Bool
	handedOver atomic.Bool // leadership was handed over on stop
	// ctx is cancelled when the server stops; long-lived handlers
	// (watches) end with it.
	ctx    context.Context
	cancel context.CancelFunc
	ready  chan struct{}
	done   chan struct{}
}

// New opens the data directory, the raft stores and the listeners, and
// starts raft. The server serves nothing until Run.
func New(cfg Config) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("coordinator config: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	root := log.With("server", cfg.Name)
	log = root.With("component", "coordinator")
	raftLog := root.With("component", "raft")
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	// s is local, not the named result: an error return must leave it for
	// the deferred cleanup below (and the closers) to close.
	s := &Server{cfg: cfg, log: log, root: root, fwdConns: map[string]*grpc.ClientConn{}, ready: make(chan struct{}), done: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	var closers []func()
	defer func() {
		if err != nil {
			s.cancel()
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()

	krPath := cfg.KeyringFile
	if krPath == "" {
		krPath = filepath.Join(cfg.DataDir, "keyring.json")
	}
	kr, created, err := keyring.LoadOrCreate(krPath)
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("created a new secret keyring; every coordinator of the cluster needs this same file", "path", krPath)
	}
	s.keyring = kr
	s.keyringPath = krPath

	var serverTLS, raftServerTLS *tls.Config
	if cfg.TLSCA != "" || !cfg.Dev {
		if serverTLS, err = pki.ServerTLSConfig(cfg.TLSCA, cfg.TLSCert, cfg.TLSKey, pki.AllowNoClientCert()); err != nil {
			return nil, err
		}
		if raftServerTLS, err = pki.ServerTLSConfig(cfg.TLSCA, cfg.TLSCert, cfg.TLSKey); err != nil {
			return nil, err
		}
		if s.clientTLS, err = pki.ClientTLSConfig(cfg.TLSCA, cfg.TLSCert, cfg.TLSKey); err != nil {
			return nil, err
		}
		if cfg.TLSCAKey != "" {
			if s.ca, err = pki.LoadCA(cfg.TLSCA, cfg.TLSCAKey); err != nil {
				return nil, err
			}
		}
	}

	if s.grpcLn, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		return nil, fmt.Errorf("listen grpc: %w", err)
	}
	closers = append(closers, func() { s.grpcLn.Close() })
	if s.grpcAddr, err = advertised(s.grpcLn.Addr(), cfg.AdvertiseAddr); err != nil {
		return nil, fmt.Errorf("grpc address: %w", err)
	}
	raftLn, err := net.Listen("tcp", cfg.RaftAddr)
	if err != nil {
		return nil, fmt.Errorf("listen raft: %w", err)
	}
	closers = append(closers, func() { raftLn.Close() })
	raftAdv, err := advertised(raftLn.Addr(), cfg.AdvertiseAddr)
	if err != nil {
		return nil, fmt.Errorf("raft address: %w", err)
	}
	raftAdvAddr, err := net.ResolveTCPAddr("tcp", raftAdv)
	if err != nil {
		return nil, fmt.Errorf("raft address: %w", err)
	}
	if cfg.HTTPAddr != "" {
		if s.httpLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return nil, fmt.Errorf("listen http: %w", err)
		}
		closers = append(closers, func() { s.httpLn.Close() })
	}

	s.renderer = render.New(syncOpener{s})
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if cfg.TLSCA != "" {
		if pem, err := os.ReadFile(cfg.TLSCA); err == nil {
			pool.AppendCertsFromPEM(pem)
		}
	}
	s.pinner = imagepin.New(imagepin.Config{RootCAs: pool})
	s.hub = newHub(cfg.MembershipDebounce)
	s.statusw = newStatusWatch()
	s.fsm = fsm.New(root)
	s.conns = newConnTracker(func(id pki.Identity, leaf *x509.Certificate) error { return s.certError(id, leaf, time.Now()) }, revokeGrace, log)
	s.fsm.OnApply = s.onApply
	s.initOps()
	s.metrics = newMetrics(s)

	s.layer = newStreamLayer(raftLn, raftAdvAddr, raftServerTLS, s.clientTLS)
	s.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  s.layer,
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  newHCLog(raftLog, "net"),
	})
	closers = append(closers, func() { s.transport.Close() })

	if s.boltStore, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.DataDir, "raft.db")}); err != nil {
		return nil, fmt.Errorf("open raft log: %w", err)
	}
	closers = append(closers, func() { s.boltStore.Close() })
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, newHCLog(raftLog, "snapshot"))
	if err != nil {
		return nil, fmt.Errorf("open raft snapshots: %w", err)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.Name)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	rc.Logger = newHCLog(raftLog, "")
	s.notifyCh = make(chan bool, 16)
	rc.NotifyCh = s.notifyCh
	// Followers learn that an entry committed from the next AppendEntries;
	// without new entries, the leader sends one after CommitTimeout
	// (raft's default 50 ms, up to twice that with its jitter). 10 ms
	// keeps a follower's reads (blocking status: push --wait) within
	// 10-20 ms of the leader, for about 70 empty AppendEntries a second
	// per follower while idle.
	rc.CommitTimeout = 10 * time.Millisecond
	if cfg.Dev {
		rc.CommitTimeout = 5 * time.Millisecond
	}

	existing, err := raft.HasExistingState(s.boltStore, s.boltStore, snaps)
	if err != nil {
		return nil, fmt.Errorf("read raft state: %w", err)
	}
	s.existing = existing
	// The newest entries stay decoded in memory: the leader reads the
	// entry before each AppendEntries it sends (an empty one every
	// CommitTimeout per follower, ~140 a second while idle) and each new
	// entry once per follower, and without the cache every read was a bolt
	// transaction and a msgpack decode of what it had just written (most
	// of an idle leader's allocation, and a report batch decoded twice
	// after it was appended), and a follower reads back every entry it
	// applies. Bounded by bytes too: report batches may be 2 MiB.
	logs, err := raftnode.NewLogCache(s.boltStore, raftLogCacheEntries, raftLogCacheBytes)
	if err != nil {
		return nil, fmt.Errorf("raft log cache: %w", err)
	}
	s.logCache = logs
	if s.raft, err = raft.NewRaft(rc, s.fsm, logs, s.boltStore, snaps, s.transport); err != nil {
		return nil, fmt.Errorf("start raft: %w", err)
	}
	closers = append(closers, func() { _ = s.raft.Shutdown().Error() })
	s.node = s.newNode()
	leaderGone := s.node.LeaderGone
	s.layer.onPeerClosed.Store(&leaderGone)
	closers = append(closers, s.node.Close)
	if !existing {
		var servers []raft.Server
		switch {
		case len(cfg.BootstrapPeers) > 0:
			for _, p := range cfg.BootstrapPeers {
				servers = append(servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Address), Suffrage: raft.Voter})
			}
		case cfg.Dev || cfg.BootstrapExpect == 1:
			servers = []raft.Server{{ID: rc.LocalID, Address: s.transport.LocalAddr(), Suffrage: raft.Voter}}
		}
		if servers != nil {
			if err := s.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
				return nil, fmt.Errorf("bootstrap raft: %w", err)
			}
			log.Info("bootstrapped raft", "servers", len(servers))
		}
	}

	if s.gossip, err = s.newGossip(raftAdv); err != nil {
		return nil, err
	}
	if s.gossip != nil {
		closers = append(closers, s.gossip.Close)
	}

	s.batcher = newBatcher(cfg.ReportBatchMax, ReportEntryMaxBytes, ReportQueueMaxPerBatch*cfg.ReportBatchMax, ReportQueueMaxBytes, s.applyReports)
	s.batcher.onFull = func() { s.metrics.refused.WithLabelValues("queue").Inc() }
	s.reportLimit = newRateLimiter(ReportRate, ReportBurst, time.Now)
	s.certLimit = newRateLimiter(CertRequestRate, CertRequestBurst, time.Now)
	s.certLimit.maxKeys = maxLimiterSources
	s.svcLimit = newRateLimiter(ServiceCertRate, ServiceCertBurst, time.Now)
	s.grpcSrv = s.newGRPCServer(serverTLS)
	return s, nil
}

// advertised returns host:port to advertise for a listener.
func advertised(a net.Addr, adv string) (string, error) {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String(), nil
	}
	ip := ta.IP
	if adv != "" {
		ip = net.ParseIP(adv)
	}
	if ip.IsUnspecified() {
		found, err := firstIP()
		if err != nil {
			return "", err
		}
		ip = found
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(ta.Port)), nil
}

func firstIP() (net.IP, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("find an address to advertise: %w", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP, nil
		}
	}
	return nil, errors.New("no address to advertise: set --advertise")
}

// staticWindow is the gRPC server's flow-control window, per stream and
// per connection (see newGRPCServer).
const staticWindow = 1 << 20

func (s *Server) newGRPCServer(tlsCfg *tls.Config) *grpc.Server {
	opts := []grpc.ServerOption{
		grpc.InTapHandle(s.tapAuth),
		grpc.ChainUnaryInterceptor(s.unaryAuth, s.unarySize),
		grpc.StreamInterceptor(s.streamCheck()),
		// The largest message read: a push and some headroom. Agents'
		// and unauthenticated calls are capped far lower per method
		// (methodMaxBytes, limits.go).
		grpc.MaxRecvMsgSize(s.cfg.MaxPushBytes + recvHeadroom),
		grpc.MaxSendMsgSize(64 << 20),
		grpc.ForceServerCodecV2(newCodec()),
		// Thousands of mostly idle watch connections: no read buffer of
		// gRPC's own (with TLS the framer reads from the TLS connection,
		// which holds a whole record already: a second buffer per
		// connection only copies it), and a small write buffer, taken
		// from a shared pool only while writing (the default).
		grpc.ReadBufferSize(0),
		grpc.WriteBufferSize(8 << 10),
		// Fixed flow-control windows: gRPC's dynamic windows probe the
		// bandwidth with a PING whenever data arrives on a connection with
		// no probe outstanding, so with one agent per connection nearly
		// every report cost a PING written and its ACK read (a third of
		// the coordinator's CPU per report). 1 MiB per stream and per
		// connection also bounds what a peer can make the server buffer
		// (the dynamic windows grow to 16 MiB); a 5 MiB push from hivectl
		// takes five window updates, on loopback or a LAN unnoticed.
		grpc.StaticStreamWindowSize(staticWindow),
		grpc.StaticConnWindowSize(staticWindow),
		// Clients (agents ping every 25s) may ping every KeepaliveMinTime,
		// even with no stream open; the server pings idle clients itself.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: s.cfg.KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: s.cfg.KeepaliveTime, Timeout: s.cfg.KeepaliveTimeout}),
	}
	if tlsCfg != nil {
		s.handshakes = newHandshakeGate(0)
		opts = append(opts, grpc.Creds(trackingCreds{TransportCredentials: credentials.NewTLS(tlsCfg), t: s.conns, gate: s.handshakes}))
	}
	g := grpc.NewServer(opts...)
	hivev1.RegisterCoordinatorServiceServer(g, &api{s: s})
	hivev1.RegisterClusterServiceServer(g, &cluster{s: s})
	s.health = health.NewServer()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(g, s.health)
	reflection.Register(g)
	return g
}

// GRPCAddr returns the advertised gRPC address (host:port).
func (s *Server) GRPCAddr() string { return s.grpcAddr }

// RaftAddr returns the advertised raft address.
func (s *Server) RaftAddr() string { return string(s.transport.LocalAddr()) }

// HTTPAddr returns the metrics/healthz listen address, or "".
func (s *Server) HTTPAddr() string {
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// Name returns the server's name (raft id).
func (s *Server) Name() string { return s.cfg.Name }

// Ready is closed once the server serves and knows a raft leader.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Done is closed when Run has returned.
func (s *Server) Done() <-chan struct{} { return s.done }

// Healthy returns nil while the server works: raft runs and has a leader
// (or this server is a candidate in an election), and the FSM applies.
// The systemd watchdog is pinged only while it returns nil.
func (s *Server) Healthy() error {
	select {
	case <-s.ctx.Done():
		return errors.New("server is stopping")
	default:
	}
	if st := s.raft.State(); st == raft.Shutdown {
		return errors.New("raft is shut down")
	}
	return nil
}

// IsLeader reports whether this server is the raft leader.
func (s *Server) IsLeader() bool { return s.raft.State() == raft.Leader }

// Run serves until ctx is cancelled, then shuts down cleanly: watches end,
// pending reports are flushed, raft stops, stores are closed.
func (s *Server) Run(ctx context.Context) error {
	defer close(s.done)
	errc := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.grpcSrv.Serve(s.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errc <- fmt.Errorf("serve grpc: %w", err)
		}
	}()
	if s.httpLn != nil {
		s.httpSrv = &http.Server{Handler: s.httpHandler(), ReadHeaderTimeout: 5 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.httpSrv.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve http: %w", err)
			}
		}()
	}
	bctx, bcancel := context.WithCancel(context.Background())
	var bwg sync.WaitGroup
	bwg.Add(5)
	go func() { defer bwg.Done(); s.keySyncLoop(bctx) }()
	bwg.Add(1)
	go func() { defer bwg.Done(); s.recordLoop(bctx) }()
	go func() { defer bwg.Done(); s.batcher.run(bctx) }()
	go func() { defer bwg.Done(); s.leaderLoop(bctx) }()
	go func() { defer bwg.Done(); s.readyLoop(bctx) }()
	go func() { defer bwg.Done(); s.reconcileLoop(bctx) }()
	bwg.Add(1)
	go func() { defer bwg.Done(); s.conns.run(bctx) }()
	bwg.Add(1)
	go func() { defer bwg.Done(); s.opsLoop(bctx) }()
	gctx, gcancel := context.WithCancel(context.Background())
	gdone := make(chan struct{})
	if s.gossip != nil {
		go func() { defer close(gdone); _ = s.gossip.Run(gctx) }()
		if !s.existing && s.cfg.BootstrapExpect > 1 && len(s.cfg.BootstrapPeers) == 0 {
			bwg.Add(1)
			go func() { defer bwg.Done(); s.bootstrapLoop(bctx) }()
		}
	} else {
		close(gdone)
	}
	s.log.Info("coordinator started", "grpc", s.grpcAddr, "raft", s.RaftAddr(), "gossip", s.GossipAddr(), "http", s.HTTPAddr(), "dev", s.cfg.Dev, "version", version.Version)
	if s.cfg.Dev {
		s.log.Warn("--dev: every caller is trusted, and the labels agents report select their roles and secrets (no certificates bind them); for a loopback trial only")
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	// Hand leadership over first, so a planned stop costs no election
	// timeout; then leave gossip, so agents move to other coordinators.
	if s.noTransfer.Load() {
		s.layer.setBlocked(true) // crash simulation: raft peers lose us at once
	}
	s.transferLeadership()
	gcancel()
	<-gdone
	s.shutdown(bcancel, &bwg)
	wg.Wait()
	s.log.Info("coordinator stopped")
	return runErr
}

// transferLeadership hands leadership to another voter when this server
// leads a cluster of more than one (skipped by hardStop in tests that
// simulate a crash).
func (s *Server) transferLeadership() {
	if s.noTransfer.Load() || s.raft.State() != raft.Leader {
		return
	}
	f := s.raft.GetConfiguration()
	if f.Error() != nil || len(f.Configuration().Servers) < 2 {
		return
	}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		err = s.raft.LeadershipTransfer().Error()
		if err == nil || s.raft.State() != raft.Leader {
			err = nil // handed over (or another server took over meanwhile)
			break
		}
	}
	if err != nil {
		s.log.Warn("leadership transfer before stopping", "err", err)
		return
	}
	s.handedOver.Store(true)
	s.log.Info("handed raft leadership over before stopping")
}

func (s *Server) shutdown(bcancel context.CancelFunc, bwg *sync.WaitGroup) {
	s.health.Shutdown()
	s.cancel() // ends watch streams
	stopped := make(chan struct{})
	go func() { s.grpcSrv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(3 * time.Second):
		s.grpcSrv.Stop()
	}
	if s.httpSrv != nil {
		sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
		_ = s.httpSrv.Shutdown(sctx)
		c()
	}
	bcancel()
	bwg.Wait()
	s.node.Close()
	if err := s.raft.Shutdown().Error(); err != nil {
		s.log.Warn("raft shutdown", "err", err)
	}
	s.transport.Close()
	s.boltStore.Close()
	s.fwdMu.Lock()
	for _, c := range s.fwdConns {
		c.Close()
	}
	s.fwdConns = map[string]*grpc.ClientConn{}
	s.fwdMu.Unlock()
}

// readyLoop marks the server ready (health SERVING) once a leader is known
// (woken by the raft node's leader-change notifier).
func (s *Server) readyLoop(ctx context.Context) {
	if err := s.node.WaitLeader(ctx); err != nil {
		return
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(hivev1.CoordinatorService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	close(s.ready)
}

// leaderLoop records this server's addresses when it becomes leader.
func (s *Server) leaderLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case isLeader := <-s.notifyCh:
			s.metrics.leaderChanges.Inc()
			if !isLeader {
				s.log.Info("lost raft leadership")
				continue
			}
			s.log.Info("became raft leader", "index", s.raft.LastIndex())
			go s.registerSelf(ctx)
			go s.runRollouts(ctx)
			go s.runReboots(ctx)
		}
	}
}

// recordCurrent reports whether the replicated record of this server has
// its current addresses and version.
func (s *Server) recordCurrent() bool {
	rec := s.fsm.Store().Coordinator(s.cfg.Name)
	return rec != nil && rec.GetGrpcAddr() == s.grpcAddr && rec.GetRaftAddr() == s.RaftAddr() && rec.GetVersion() == version.Version &&
		rec.GetCommandVersion() == fsm.CommandVersion
}

// recordLoop keeps this server's coordinator record current on every
// server (followers forward it), so that coordinators can reach each other
// by gRPC (key sharing, members) without gossip.
func (s *Server) recordLoop(ctx context.Context) {
	select {
	case <-s.ready:
	case <-ctx.Done():
		return
	}
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		if !s.recordCurrent() {
			actx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
			_, err := s.commit(actx, &hivev1.Command{Body: &hivev1.Command_CoordinatorUpsert{CoordinatorUpsert: &hivev1.CoordinatorUpsertCommand{
				Name: s.cfg.Name, GrpcAddr: s.grpcAddr, RaftAddr: s.RaftAddr(), Version: version.Version, CommandVersion: fsm.CommandVersion,
			}}})
			cancel()
			if err != nil {
				s.log.Debug("record this coordinator's addresses", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) registerSelf(ctx context.Context) {
	for attempt := 0; attempt < 50 && s.raft.State() == raft.Leader; attempt++ {
		// The term's read barrier (raftnode): the state holds every
		// earlier entry, and the first consistent read of the term needs
		// no barrier of its own.
		if _, err := s.node.ReadIndex(ctx); err == nil {
			if s.recordCurrent() {
				return
			}
			_, _, err = s.applyLocal(&hivev1.Command{Body: &hivev1.Command_CoordinatorUpsert{CoordinatorUpsert: &hivev1.CoordinatorUpsertCommand{
				Name: s.cfg.Name, GrpcAddr: s.grpcAddr, RaftAddr: s.RaftAddr(), Version: version.Version, CommandVersion: fsm.CommandVersion,
			}}})
			if err == nil {
				return
			}
			s.log.Warn("record leader address", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// The newest raft entries stay decoded in memory (raftnode.LogCache, in
// New): enough for what raft reads back while a follower is a few
// AppendEntries batches behind (a packed report batch at 10,000 agents is
// ~7 KB), bounded so that the cache holds little when idle.
const (
	raftLogCacheEntries = 256
	raftLogCacheBytes   = 1 << 20
)
