package load

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hivefleet/hive/pki"
)

// ClusterOptions configure StartCluster.
type ClusterOptions struct {
	// Bin is the hive-coordinator binary.
	Bin string
	// Dir holds the PKI, the data directories and the logs.
	Dir string
	// N coordinators (default 3).
	N int
	// Log receives the coordinators' output (nil: Dir/NAME.log only).
	Log io.Writer
	// Args are extra hive-coordinator arguments for every server, Env
	// extra environment variables (KEY=VALUE, e.g. GOGC=50).
	Args []string
	Env  []string
}

// Cluster is N real hive-coordinator processes on 127.0.0.1 with mutual
// TLS, raft and encrypted gossip, and the CA that signed their
// certificates (the CA key is what hive-load issues agent certificates
// with).
type Cluster struct {
	CA       *pki.CA
	CAFile   string
	CAKey    string
	Addrs    []string // gRPC
	HTTP     []string // /metrics and /healthz
	Procs    []*exec.Cmd
	done     []chan struct{}
	exitErrs []error
}

// PIDs returns the coordinators' process ids.
func (c *Cluster) PIDs() []int {
	var p []int
	for _, cmd := range c.Procs {
		p = append(p, cmd.Process.Pid)
	}
	return p
}

// freePorts returns n distinct TCP ports that were free a moment ago
// (also checked free for UDP: gossip listens on both).
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		p := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		u.Close()
		ports = append(ports, p)
	}
	return ports, nil
}

// StartCluster creates a CA, coordinator certificates and a gossip key in
// opts.Dir, starts the coordinators and waits until every one answers
// /healthz with a leader (at most two minutes).
func StartCluster(ctx context.Context, opts ClusterOptions) (*Cluster, error) {
	if opts.N == 0 {
		opts.N = 3
	}
	if opts.Bin == "" {
		return nil, errors.New("start cluster: no hive-coordinator binary")
	}
	pkiDir := filepath.Join(opts.Dir, "pki")
	if err := os.MkdirAll(pkiDir, 0o700); err != nil {
		return nil, err
	}
	ca, err := pki.NewCA(pki.CAOptions{})
	if err != nil {
		return nil, err
	}
	caFile, caKey, err := pki.WriteCA(pkiDir, ca, true)
	if err != nil {
		return nil, err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	keyFile := filepath.Join(pkiDir, "gossip.key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, err
	}
	ports, err := freePorts(4 * opts.N)
	if err != nil {
		return nil, err
	}
	c := &Cluster{CA: ca, CAFile: caFile, CAKey: caKey}
	gossip := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", ports[4*i+2]) }
	for i := 0; i < opts.N; i++ {
		name := fmt.Sprintf("c%d", i+1)
		iss, err := ca.Issue(pki.CertRequest{Identity: pki.Identity{Kind: pki.KindCoordinator, Name: name}})
		if err != nil {
			return nil, err
		}
		certFile, keyPEM, err := pki.WriteCert(pkiDir, name, iss, true)
		if err != nil {
			return nil, err
		}
		c.Addrs = append(c.Addrs, fmt.Sprintf("127.0.0.1:%d", ports[4*i]))
		c.HTTP = append(c.HTTP, fmt.Sprintf("127.0.0.1:%d", ports[4*i+3]))
		args := []string{
			"--name", name,
			"--data-dir", filepath.Join(opts.Dir, name),
			"--grpc-addr", c.Addrs[i],
			"--raft-addr", fmt.Sprintf("127.0.0.1:%d", ports[4*i+1]),
			"--gossip-addr", gossip(i),
			"--http-addr", c.HTTP[i],
			"--bootstrap-expect", fmt.Sprint(opts.N),
			"--gossip-key-file", keyFile,
			"--tls-ca", caFile, "--tls-cert", certFile, "--tls-key", keyPEM,
		}
		for j := 0; j < opts.N; j++ {
			if j != i {
				args = append(args, "--join", gossip(j))
			}
		}
		args = append(args, opts.Args...)
		logf, err := os.Create(filepath.Join(opts.Dir, name+".log"))
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(opts.Bin, args...)
		cmd.Env = append(os.Environ(), opts.Env...)
		var out io.Writer = logf
		if opts.Log != nil {
			out = io.MultiWriter(logf, opts.Log)
		}
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			c.Stop()
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
		c.Procs = append(c.Procs, cmd)
		d := make(chan struct{})
		c.done = append(c.done, d)
		c.exitErrs = append(c.exitErrs, nil)
		go func(i int) {
			c.exitErrs[i] = cmd.Wait()
			logf.Close()
			close(d)
		}(i)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for i, h := range c.HTTP {
		for {
			err := healthy(ctx, h)
			if err == nil {
				break
			}
			select {
			case <-c.done[i]:
				c.Stop()
				return nil, fmt.Errorf("coordinator c%d exited: %v (log: %s)", i+1, c.exitErrs[i], filepath.Join(opts.Dir, fmt.Sprintf("c%d.log", i+1)))
			default:
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				c.Stop()
				return nil, fmt.Errorf("coordinator c%d not healthy after 2 minutes: %v", i+1, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return c, nil
}

func healthy(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return httpGet(ctx, "http://"+addr+"/healthz")
}

// httpGet reads url to its end; a status other than 200 is an error with
// the path, the status and the body.
func httpGet(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", req.URL.Path, resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

// Stop stops the coordinators (SIGTERM, then SIGKILL after 10 s) and
// waits for them.
func (c *Cluster) Stop() {
	for _, p := range c.Procs {
		_ = p.Process.Signal(syscall.SIGTERM)
	}
	t := time.After(10 * time.Second)
	for i, d := range c.done {
		select {
		case <-d:
		case <-t:
			_ = c.Procs[i].Process.Kill()
			<-d
		}
	}
}
