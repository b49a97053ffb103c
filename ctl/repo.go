package ctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// repoClient talks to hive-repo's HTTP API.
type repoClient struct {
	server string
	token  string
	hc     *http.Client
}

func (c *repoClient) url(parts ...string) string {
	esc := make([]string, len(parts))
	for i, p := range parts {
		esc[i] = url.PathEscape(p)
	}
	return strings.TrimRight(c.server, "/") + "/api/v1/repos/" + strings.Join(esc, "/")
}

func (c *repoClient) do(req *http.Request, out any) error {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s (HTTP %d)", e.Error, resp.StatusCode)
		}
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if out != nil && len(b) > 0 {
		return json.Unmarshal(b, out)
	}
	return nil
}

type repoFlags struct {
	server, repo, tokenFile string
	timeout                 time.Duration
}

func (f *repoFlags) add(cmd *cobra.Command, needRepo bool) {
	cmd.Flags().StringVar(&f.server, "server", os.Getenv("HIVE_REPO_SERVER"), "hive-repo URL, e.g. http://repo.example:7480 (env HIVE_REPO_SERVER)")
	cmd.Flags().StringVar(&f.tokenFile, "token-file", "", "file with the upload bearer token (default: env HIVE_REPO_TOKEN)")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 30*time.Minute, "timeout per request")
	if needRepo {
		cmd.Flags().StringVar(&f.repo, "repo", "", "repository name")
	}
}

func (f *repoFlags) client(needRepo bool) (*repoClient, error) {
	if f.server == "" {
		return nil, errors.New("--server is required")
	}
	if needRepo && f.repo == "" {
		return nil, errors.New("--repo is required")
	}
	c := &repoClient{server: f.server, hc: &http.Client{Timeout: f.timeout}, token: os.Getenv("HIVE_REPO_TOKEN")}
	if f.tokenFile != "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("token: %w", err)
		}
		c.token = strings.TrimSpace(string(b))
	}
	return c, nil
}

func newRepoCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "repo",
		Short: "Upload, list, show and remove packages of hive-repo repositories",
	}
	cmd.AddCommand(repoUploadCmd(), repoListCmd(), repoShowCmd(), repoRemoveCmd())
	return cmd
}

// progressThreshold is the file size from which upload shows a progress bar.
const progressThreshold = 1 << 20

func repoUploadCmd() *cobra.Command {
	var f repoFlags
	var replace, reindex bool
	cmd := &cobra.Command{
		Use:   "upload --server URL --repo NAME [--token-file F] [--replace] FILE...",
		Short: "Upload .rpm and .deb files; they are verified by the server and published after the burst",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client(true)
			if err != nil {
				return err
			}
			failed := 0
			for _, file := range args {
				if err := uploadOne(cmd, c, f.repo, file, replace); err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s: %v\n", file, err)
					failed++
				}
			}
			if reindex && failed < len(args) {
				req, _ := http.NewRequestWithContext(cmd.Context(), http.MethodPost, c.url(f.repo, "reindex"), nil)
				var r struct {
					Generation int64 `json:"generation"`
				}
				if err := c.do(req, &r); err != nil {
					return fmt.Errorf("reindex: %w", err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "published %s generation %d\n", f.repo, r.Generation)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d uploads failed", failed, len(args))
			}
			return nil
		},
	}
	f.add(cmd, true)
	cmd.Flags().BoolVar(&replace, "replace", false, "replace a package file of the same name with different content")
	cmd.Flags().BoolVar(&reindex, "reindex", false, "publish right after the uploads instead of waiting for the debounce")
	return cmd
}

func uploadOne(cmd *cobra.Command, c *repoClient, repoName, file string, replace bool) error {
	fh, err := os.Open(file)
	if err != nil {
		return err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return err
	}
	u := c.url(repoName, "packages", filepath.Base(file))
	if replace {
		u += "?replace=1"
	}
	var body io.Reader = fh
	var bar *progress
	if fi.Size() >= progressThreshold {
		bar = &progress{r: fh, w: cmd.ErrOrStderr(), name: filepath.Base(file), total: fi.Size(), start: time.Now()}
		body = bar
	}
	req, err := http.NewRequestWithContext(cmd.Context(), http.MethodPut, u, body)
	if err != nil {
		return err
	}
	req.ContentLength = fi.Size()
	var res struct {
		Filename  string `json:"filename"`
		SHA256    string `json:"sha256"`
		Package   string `json:"package"`
		Unchanged bool   `json:"unchanged"`
		Replaced  bool   `json:"replaced"`
	}
	err = c.do(req, &res)
	if bar != nil {
		bar.finish()
	}
	if err != nil {
		return err
	}
	if res.Filename != "" && res.Filename != filepath.Base(file) {
		// The same bytes were already there under another name: the
		// repository keeps one file per package version.
		res.Package += ", stored as " + res.Filename
	}
	what := "uploaded"
	switch {
	case res.Unchanged:
		what = "unchanged"
	case res.Replaced:
		what = "replaced"
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s %s (%s) sha256:%s\n", what, filepath.Base(file), esc(res.Package), esc(res.SHA256))
	return nil
}

// progress draws a one-line progress bar while the body is read.
type progress struct {
	r     io.Reader
	w     io.Writer
	name  string
	total int64
	done  int64
	start time.Time
	last  time.Time
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done += int64(n)
	if now := time.Now(); now.Sub(p.last) >= 100*time.Millisecond || p.done == p.total {
		p.last = now
		p.draw()
	}
	return n, err
}

func (p *progress) draw() {
	const width = 30
	frac := float64(p.done) / float64(max(p.total, 1))
	fill := int(frac * width)
	rate := float64(p.done) / max(time.Since(p.start).Seconds(), 1e-3) / (1 << 20)
	fmt.Fprintf(rawWriter(p.w), "\r%-32.32s [%s%s] %3.0f%% %7.1f MiB/s", esc(p.name), strings.Repeat("=", fill), strings.Repeat(" ", width-fill), frac*100, rate)
}

func (p *progress) finish() {
	p.draw()
	fmt.Fprintln(p.w)
}

type repoInfo struct {
	Name       string    `json:"name"`
	Packages   int       `json:"packages"`
	Generation int64     `json:"generation"`
	Published  time.Time `json:"published"`
	Files      []struct {
		Filename string    `json:"filename"`
		Kind     string    `json:"kind"`
		SHA256   string    `json:"sha256"`
		Size     int64     `json:"size"`
		Package  string    `json:"package"`
		Uploaded time.Time `json:"uploaded"`
	} `json:"files"`
}

func repoListCmd() *cobra.Command {
	var f repoFlags
	cmd := &cobra.Command{
		Use:   "list --server URL",
		Short: "List the repositories",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client(false)
			if err != nil {
				return err
			}
			req, _ := http.NewRequestWithContext(cmd.Context(), http.MethodGet, strings.TrimSuffix(c.url(), "/"), nil)
			var out []repoInfo
			if err := c.do(req, &out); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "REPO\tPACKAGES\tGENERATION\tPUBLISHED")
			for _, r := range out {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", esc(r.Name), r.Packages, r.Generation, fmtTime(r.Published))
			}
			return tw.Flush()
		},
	}
	f.add(cmd, false)
	return cmd
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func repoShowCmd() *cobra.Command {
	var f repoFlags
	cmd := &cobra.Command{
		Use:   "show --server URL --repo NAME",
		Short: "Show a repository's package files",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client(true)
			if err != nil {
				return err
			}
			req, _ := http.NewRequestWithContext(cmd.Context(), http.MethodGet, c.url(f.repo), nil)
			var r repoInfo
			if err := c.do(req, &r); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "repo %s: %d packages, generation %d published %s\n", esc(r.Name), r.Packages, r.Generation, fmtTime(r.Published))
			fmt.Fprintf(cmd.OutOrStdout(), "yum: %s/yum/%s/  apt: %s/apt/%s stable main  key: %s/keys/%s.asc\n",
				strings.TrimRight(f.server, "/"), esc(r.Name), strings.TrimRight(f.server, "/"), esc(r.Name), strings.TrimRight(f.server, "/"), esc(r.Name))
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "FILE\tKIND\tPACKAGE\tSIZE\tSHA256")
			for _, p := range r.Files {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.16s…\n", esc(p.Filename), esc(p.Kind), esc(p.Package), p.Size, esc(p.SHA256))
			}
			return tw.Flush()
		},
	}
	f.add(cmd, true)
	return cmd
}

func repoRemoveCmd() *cobra.Command {
	var f repoFlags
	cmd := &cobra.Command{
		Use:   "remove --server URL --repo NAME FILE...",
		Short: "Remove package files from a repository (published after the debounce)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client(true)
			if err != nil {
				return err
			}
			failed := 0
			for _, file := range args {
				req, _ := http.NewRequestWithContext(cmd.Context(), http.MethodDelete, c.url(f.repo, "packages", file), nil)
				if err := c.do(req, nil); err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s: %v\n", file, err)
					failed++
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", file)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d removals failed", failed, len(args))
			}
			return nil
		},
	}
	f.add(cmd, true)
	return cmd
}
