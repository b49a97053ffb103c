package debroot_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/hivefleet/hive/internal/debroot"
)

func TestCopyIsRealAndPrivate(t *testing.T) {
	shared := debroot.Shared(t)
	root := debroot.Copy(t)
	out, err := exec.Command("chroot", root, "dpkg-query", "-W", "-f", "${Status}", "apt").CombinedOutput()
	if err != nil || string(out) != "install ok installed" {
		t.Fatalf("apt in root: %q %v", out, err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "hive-test"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(shared, "etc", "hive-test")); !os.IsNotExist(err) {
		t.Fatalf("copy is not private: %v", err)
	}
}
