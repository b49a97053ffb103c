package image

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/zclconf/go-cty/cty"
	"gopkg.in/yaml.v3"

	"github.com/hivefleet/hive/internal/testenv"
)

const template = "hive-agent.pkr.hcl"

// Packer release and the Amazon plugin it vendors: v1.9.4 is the last
// Packer the Go module proxy serves (later releases are not on it).
const (
	packerVersion = "v1.9.4"
	amazonPlugin  = "github.com/hashicorp/packer-plugin-amazon"
	amazonVersion = "1.2.1"
	pluginAPI     = "x5.0"
)

var fileSchema = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{
	{Type: "packer"},
	{Type: "variable", LabelNames: []string{"name"}},
	{Type: "locals"},
	{Type: "source", LabelNames: []string{"type", "name"}},
	{Type: "build"},
}}

// TestTemplateStructure parses the Packer template with hashicorp/hcl and
// checks what the image promises: the Amazon plugin is pinned, the agent
// package is a required input, no variable carries a secret, the build
// instance demands IMDSv2, and the build installs the package through
// provision.sh.
func TestTemplateStructure(t *testing.T) {
	f, diags := hclparse.NewParser().ParseHCLFile(template)
	if diags.HasErrors() {
		t.Fatalf("parse %s: %v", template, diags)
	}
	content, diags := f.Body.Content(fileSchema)
	if diags.HasErrors() {
		t.Fatalf("%s: unexpected top-level content: %v", template, diags)
	}
	blocks := map[string][]*hcl.Block{}
	for _, b := range content.Blocks {
		blocks[b.Type] = append(blocks[b.Type], b)
	}
	for _, typ := range []string{"packer", "locals", "source", "build"} {
		if len(blocks[typ]) != 1 {
			t.Fatalf("%s: %d %q blocks, want 1", template, len(blocks[typ]), typ)
		}
	}

	// packer { required_plugins { amazon = { source = ... } } }
	pk, diags := blocks["packer"][0].Body.Content(&hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "required_version"}},
		Blocks:     []hcl.BlockHeaderSchema{{Type: "required_plugins"}},
	})
	if diags.HasErrors() || len(pk.Blocks) != 1 {
		t.Fatalf("packer block: %v", diags)
	}
	plugins, _ := pk.Blocks[0].Body.JustAttributes()
	amazon := evalMap(t, plugins["amazon"])
	if amazon["source"] != "github.com/hashicorp/amazon" || amazon["version"] == "" {
		t.Errorf("required_plugins.amazon = %v", amazon)
	}

	// Variables: agent_package required, everything else defaulted, no
	// default that looks like secret material.
	vars := map[string]map[string]*hcl.Attribute{}
	for _, b := range blocks["variable"] {
		vc, diags := b.Body.Content(&hcl.BodySchema{
			Attributes: []hcl.AttributeSchema{{Name: "type"}, {Name: "default"}, {Name: "description"}, {Name: "sensitive"}},
			Blocks:     []hcl.BlockHeaderSchema{{Type: "validation"}},
		})
		if diags.HasErrors() {
			t.Fatalf("variable %q: %v", b.Labels[0], diags)
		}
		vars[b.Labels[0]] = vc.Attributes
		if vc.Attributes["type"] == nil {
			t.Errorf("variable %q has no type", b.Labels[0])
		}
	}
	for _, name := range []string{"agent_package", "os_family", "arch", "region", "hive_version"} {
		if vars[name] == nil {
			t.Errorf("variable %q missing", name)
		}
	}
	if vars["agent_package"] != nil && vars["agent_package"]["default"] != nil {
		t.Error("agent_package has a default: the package to bake must be given explicitly")
	}
	for name, attrs := range vars {
		for _, w := range []string{"token", "secret", "password", "key", "cert", "join", "label"} {
			if strings.Contains(name, w) {
				t.Errorf("variable %q: the image must not carry %s material (it comes from cloud-init)", name, w)
			}
		}
		if d := attrs["default"]; d != nil {
			v, diags := d.Expr.Value(nil)
			if diags.HasErrors() {
				t.Errorf("variable %q default: %v", name, diags)
				continue
			}
			if s := fmt.Sprint(v.GoString()); strings.Contains(s, "BEGIN") {
				t.Errorf("variable %q default holds PEM material", name)
			}
		}
	}

	// source "amazon-ebs" "agent" with IMDSv2 required on the build
	// instance.
	src := blocks["source"][0]
	if !slices.Equal(src.Labels, []string{"amazon-ebs", "agent"}) {
		t.Errorf("source labels = %v", src.Labels)
	}
	sc, _, diags := src.Body.PartialContent(&hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "ami_name", Required: true}, {Name: "region", Required: true}},
		Blocks:     []hcl.BlockHeaderSchema{{Type: "metadata_options"}, {Type: "source_ami_filter"}},
	})
	if diags.HasErrors() {
		t.Fatalf("source: %v", diags)
	}
	var md map[string]*hcl.Attribute
	for _, b := range sc.Blocks {
		if b.Type == "metadata_options" {
			md, _ = b.Body.JustAttributes()
		}
	}
	if md == nil || evalString(t, md["http_tokens"]) != "required" {
		t.Error("metadata_options.http_tokens must be \"required\" (IMDSv2)")
	}

	// build: the file provisioner uploads var.agent_package, the shell
	// provisioner runs provision.sh, which exists.
	bc, _, diags := blocks["build"][0].Body.PartialContent(&hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "sources", Required: true}},
		Blocks:     []hcl.BlockHeaderSchema{{Type: "provisioner", LabelNames: []string{"type"}}, {Type: "post-processor", LabelNames: []string{"type"}}},
	})
	if diags.HasErrors() {
		t.Fatalf("build: %v", diags)
	}
	if got := string(bc.Attributes["sources"].Expr.Range().SliceBytes(f.Bytes)); !strings.Contains(got, "source.amazon-ebs.agent") {
		t.Errorf("build sources = %s", got)
	}
	var kinds []string
	for _, p := range bc.Blocks {
		if p.Type != "provisioner" {
			continue
		}
		kinds = append(kinds, p.Labels[0])
		attrs, _ := p.Body.JustAttributes()
		switch p.Labels[0] {
		case "file":
			if got := string(attrs["source"].Expr.Range().SliceBytes(f.Bytes)); got != "var.agent_package" {
				t.Errorf("file provisioner source = %s, want var.agent_package", got)
			}
		case "shell":
			got := string(attrs["script"].Expr.Range().SliceBytes(f.Bytes))
			if !strings.Contains(got, "provision.sh") {
				t.Errorf("shell provisioner script = %s", got)
			}
		}
	}
	if !slices.Equal(kinds, []string{"file", "shell"}) {
		t.Errorf("provisioners = %v, want file then shell", kinds)
	}
	if out, err := exec.Command("sh", "-n", "provision.sh").CombinedOutput(); err != nil {
		t.Errorf("provision.sh: %v\n%s", err, out)
	}
}

func evalMap(t *testing.T, a *hcl.Attribute) map[string]string {
	t.Helper()
	if a == nil {
		return nil
	}
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() || !v.Type().IsObjectType() {
		t.Fatalf("%s: want an object: %v", a.Name, diags)
	}
	out := map[string]string{}
	for k, e := range v.AsValueMap() {
		if e.Type() == cty.String {
			out[k] = e.AsString()
		}
	}
	return out
}

func evalString(t *testing.T, a *hcl.Attribute) string {
	t.Helper()
	if a == nil {
		return ""
	}
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() || v.Type() != cty.String {
		t.Fatalf("%s: want a string: %v", a.Name, diags)
	}
	return v.AsString()
}

// TestPackerValidate runs the real `packer validate` on the template, with
// Packer and its Amazon plugin built from the Go module proxy (cached per
// machine; the first build takes several minutes). HIVE_PACKER and
// HIVE_PACKER_PLUGIN_PATH select a Packer and plugin directory instead.
func TestPackerValidate(t *testing.T) {
	testenv.SkipShort(t)
	packer, plugins := ensurePacker(t)
	pkg := filepath.Join(t.TempDir(), "hive-agent_1.2.3-1_amd64.deb")
	if err := os.WriteFile(pkg, []byte("stand-in"), 0o644); err != nil {
		t.Fatal(err)
	}
	validate := func(args ...string) (string, error) {
		cmd := exec.Command(packer, append(append([]string{"validate"}, args...), ".")...)
		home := t.TempDir()
		cmd.Env = append(os.Environ(), "HOME="+home, "PACKER_CONFIG_DIR="+home, "PACKER_PLUGIN_PATH="+plugins,
			"CHECKPOINT_DISABLE=1", "PACKER_CACHE_DIR="+filepath.Join(home, "cache"))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := validate("-var", "agent_package="+pkg); err != nil || !strings.Contains(out, "The configuration is valid") {
		t.Fatalf("packer validate: %v\n%s", err, out)
	}
	for _, bad := range []string{"arch=i386", "os_family=windows"} {
		if out, err := validate("-var", "agent_package="+pkg, "-var", bad); err == nil {
			t.Errorf("packer validate -var %s passed:\n%s", bad, out)
		}
	}
	if out, err := validate(); err == nil {
		t.Errorf("packer validate without agent_package passed:\n%s", out)
	}
}

func cacheDir() string {
	base := os.Getenv("HIVE_TEST_CACHE")
	if base == "" {
		base = "/var/tmp/hive-test-cache"
	}
	return filepath.Join(base, "packer-"+packerVersion)
}

// ensurePacker returns a packer binary and a plugin directory holding the
// Amazon plugin, building both once per machine under a file lock.
func ensurePacker(t *testing.T) (packer, pluginPath string) {
	t.Helper()
	if p := os.Getenv("HIVE_PACKER"); p != "" {
		return p, os.Getenv("HIVE_PACKER_PLUGIN_PATH")
	}
	goTool := testenv.RequireTool(t, "go")
	dir := cacheDir()
	packer = filepath.Join(dir, "packer")
	pluginPath = filepath.Join(dir, "plugins")
	marker := filepath.Join(dir, "ok")
	if _, err := os.Stat(marker); err == nil {
		return packer, pluginPath
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lf, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(lf.Fd()), syscall.LOCK_UN) //nolint:errcheck
	if _, err := os.Stat(marker); err == nil {
		return packer, pluginPath
	}

	// The module's own directory is a complete main module (go.mod and
	// go.sum): build there, outside hive's module graph.
	dl := exec.Command(goTool, "mod", "download", "-json", "github.com/hashicorp/packer@"+packerVersion)
	dl.Dir = t.TempDir()
	out, err := dl.Output()
	if err != nil {
		testenv.Missing(t, "packer %s from the module proxy: %v", packerVersion, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download: %v: %s", err, out)
	}
	plugin := filepath.Join(t.TempDir(), "packer-plugin-amazon")
	for _, b := range [][]string{{"-o", packer, "."}, {"-o", plugin, amazonPlugin}} {
		cmd := exec.Command(goTool, append([]string{"build"}, b...)...)
		cmd.Dir = mod.Dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
		t.Logf("building %s (several minutes the first time)", b[len(b)-1])
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %v: %v\n%s", b, err, out)
		}
	}
	// Packer's plugin directory layout: <source>/<binary>_v<ver>_<api>_<os>_<arch>
	// and a _SHA256SUM file beside it.
	name := fmt.Sprintf("packer-plugin-amazon_v%s_%s_%s_%s", amazonVersion, pluginAPI, runtime.GOOS, runtime.GOARCH)
	pdir := filepath.Join(pluginPath, "github.com", "hashicorp", "amazon")
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(plugin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if err := os.WriteFile(filepath.Join(pdir, name), b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pdir, name+"_SHA256SUM"), []byte(hex.EncodeToString(sum[:])), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return packer, pluginPath
}

// TestCloudInitExample checks the example user data: valid cloud-config,
// every file it writes under /etc/hive, private material 0600, and an
// agent configuration that passes the agent's start rule.
func TestCloudInitExample(t *testing.T) {
	testenv.RequireTool(t, "sh", "awk")
	raw, err := os.ReadFile("cloud-init.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(raw), "#cloud-config\n") {
		t.Fatal("cloud-init.yaml must start with #cloud-config")
	}
	var ci struct {
		WriteFiles []struct {
			Path        string `yaml:"path"`
			Owner       string `yaml:"owner"`
			Permissions string `yaml:"permissions"`
			Content     string `yaml:"content"`
		} `yaml:"write_files"`
	}
	if err := yaml.Unmarshal(raw, &ci); err != nil {
		t.Fatalf("cloud-init.yaml: %v", err)
	}
	files := map[string]string{}
	for _, f := range ci.WriteFiles {
		if !strings.HasPrefix(f.Path, "/etc/hive/") {
			t.Errorf("write_files %s: outside /etc/hive", f.Path)
		}
		if (strings.HasSuffix(f.Path, ".key") || strings.HasSuffix(f.Path, "-key.pem") || strings.Contains(f.Path, "token")) && f.Permissions != "0600" {
			t.Errorf("write_files %s: permissions %q, want 0600", f.Path, f.Permissions)
		}
		files[f.Path] = f.Content
	}
	agentYAML, ok := files["/etc/hive/agent.yaml"]
	if !ok {
		t.Fatal("cloud-init.yaml does not write /etc/hive/agent.yaml")
	}
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(agentYAML), &cfg); err != nil {
		t.Fatalf("agent.yaml in cloud-init.yaml: %v", err)
	}
	p := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(p, []byte(agentYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sh", "../packaging/agent-configured", p).CombinedOutput(); err != nil {
		t.Errorf("agent.yaml from cloud-init.yaml does not pass the start rule: %v %s", err, out)
	}
}
