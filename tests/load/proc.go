package load

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// procMem returns VmRSS and VmHWM of /proc/PID/status ("self" for this
// process), in bytes.
func procMem(pid string) (rss, peak int64) {
	data, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			peak = kb << 10
		}
	}
	return rss, peak
}

// procCPU returns the user+system time of process pid.
func procCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields after ")".
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	// USER_HZ is 100 on Linux.
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// Target is a coordinator to measure: its process id (RSS, peak RSS, CPU
// from /proc), its /metrics address (RSS, CPU, Go heap, stacks,
// goroutines), or both.
type Target struct {
	PID     int
	Metrics string
}

func (t Target) name() string {
	switch {
	case t.PID != 0 && t.Metrics != "":
		return fmt.Sprintf("pid %d", t.PID)
	case t.PID != 0:
		return fmt.Sprintf("pid %d", t.PID)
	default:
		return t.Metrics
	}
}

// coordUsage reads the coordinators' memory and CPU time.
func coordUsage(ctx context.Context, cfg Config) []Usage {
	var out []Usage
	for _, t := range cfg.Coordinators {
		u := Usage{Name: t.name()}
		if t.Metrics != "" {
			m, err := scrape(ctx, t.Metrics)
			if err != nil {
				u.Err = err
			} else {
				u.RSS = int64(m["process_resident_memory_bytes"])
				u.CPU = time.Duration(m["process_cpu_seconds_total"] * float64(time.Second))
				u.Heap = int64(m["go_memstats_heap_inuse_bytes"])
				u.Stacks = int64(m["go_memstats_stack_inuse_bytes"])
				u.Goroutines = int(m["go_goroutines"])
				u.Leader = m["hive_coordinator_raft_state"] == 2
			}
		}
		if t.PID != 0 {
			u.CPU, u.Err = procCPU(t.PID)
			u.RSS, u.PeakRSS = procMem(strconv.Itoa(t.PID))
		}
		out = append(out, u)
	}
	return out
}

// scrape reads the unlabelled samples of a Prometheus text exposition.
func scrape(ctx context.Context, addr string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	url := addr
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	if !strings.Contains(strings.TrimPrefix(strings.TrimPrefix(url, "http://"), "https://"), "/") {
		url += "/metrics"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return parseMetrics(resp.Body)
}

func parseMetrics(r io.Reader) (map[string]float64, error) {
	m := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' || strings.ContainsRune(l, '{') {
			continue
		}
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		m[f[0]] = v
	}
	return m, sc.Err()
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
