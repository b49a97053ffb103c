// Command packaging builds hive's .deb and .rpm packages from binaries built
// by `make build`; `make packages` runs it once per architecture:
//
//	go run ./deploy/packaging -version v1.2.3 -arch amd64 -bin bin -out dist
//
// The package contents are declared in internal/packaging.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hivefleet/hive/internal/packaging"
)

func main() {
	cfg := packaging.DefaultConfig()
	formats := strings.Join(cfg.Formats, ",")
	pkgs := ""
	flag.StringVar(&cfg.Version, "version", cfg.Version, "hive version (release tag, git describe output, commit or dev)")
	flag.StringVar(&cfg.Arch, "arch", cfg.Arch, "GOARCH of the binaries")
	flag.StringVar(&cfg.BinDir, "bin", cfg.BinDir, "directory holding the four binaries")
	flag.StringVar(&cfg.DeployDir, "deploy", cfg.DeployDir, "the repository's deploy/ directory")
	flag.StringVar(&cfg.OutDir, "out", cfg.OutDir, "output directory")
	flag.StringVar(&formats, "formats", formats, "comma-separated package formats (deb,rpm)")
	flag.StringVar(&pkgs, "packages", pkgs, "comma-separated package names (default: all)")
	flag.StringVar(&cfg.Compression, "compression", cfg.Compression, "payload compression: gzip, xz, zstd, or none (deb only)")
	flag.Parse()
	cfg.Formats = split(formats)
	cfg.Packages = split(pkgs)
	// Reproducible builds: SOURCE_DATE_EPOCH stamps every file.
	if e := os.Getenv("SOURCE_DATE_EPOCH"); e != "" {
		sec, err := strconv.ParseInt(e, 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "packaging: SOURCE_DATE_EPOCH %q: %v\n", e, err)
			os.Exit(2)
		}
		cfg.MTime = time.Unix(sec, 0).UTC()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	arts, err := packaging.Build(ctx, cfg, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "packaging: %v\n", err)
		os.Exit(1)
	}
	for _, a := range arts {
		fmt.Println(a.Path)
	}
}

func split(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
