package servicetest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"

	"github.com/hivefleet/hive/converge/service"
	"github.com/hivefleet/hive/internal/testenv"
)

// DBus serves a Systemd as org.freedesktop.systemd1 on a private
// dbus-daemon, so the provider's real D-Bus client (go-systemd) is
// exercised over a real bus: method calls, unit property GetAll on escaped
// unit paths, and JobRemoved signals completing jobs.
type DBus struct {
	sd   *Systemd
	addr string
	conn *godbus.Conn
	jobs atomic.Uint32
}

// ServeDBus starts a private dbus-daemon (stopped when the test ends) and
// serves sd on it.
func ServeDBus(t testing.TB, sd *Systemd) *DBus {
	t.Helper()
	bin := testenv.RequireTool(t, "dbus-daemon")
	dir, err := os.MkdirTemp("", "hive-dbus-") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "bus")
	conf := filepath.Join(dir, "bus.conf")
	cfg := `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path=` + sock + `</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
`
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config-file="+conf, "--nofork", "--nopidfile")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dbus-daemon: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill() //nolint:errcheck
		cmd.Wait()         //nolint:errcheck
		if t.Failed() {
			t.Logf("dbus-daemon: %s", stderr.String())
		}
	})
	addr := "unix:path=" + sock
	var conn *godbus.Conn
	for i := 0; ; i++ {
		if conn, err = godbus.Connect(addr); err == nil {
			break
		}
		if i > 100 {
			t.Fatalf("connect to dbus-daemon: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() { conn.Close() })
	d := &DBus{sd: sd, addr: addr, conn: conn}
	if err := conn.Export(&manager{d}, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager"); err != nil {
		t.Fatal(err)
	}
	if err := conn.ExportSubtree(&props{d}, "/org/freedesktop/systemd1/unit", "org.freedesktop.DBus.Properties"); err != nil {
		t.Fatal(err)
	}
	// Own the name only after every export: godbus reads its export
	// tables without a lock while serving calls.
	if reply, err := conn.RequestName("org.freedesktop.systemd1", godbus.NameFlagDoNotQueue); err != nil || reply != godbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("own org.freedesktop.systemd1: %v %v", reply, err)
	}
	return d
}

// Connect returns the provider's real D-Bus client (service.SystemdBus
// over go-systemd) connected to the private bus; for service.Config.
func (d *DBus) Connect(ctx context.Context) (service.Bus, error) {
	c, err := sddbus.NewConnection(func() (*godbus.Conn, error) {
		return godbus.Connect(d.addr, godbus.WithContext(ctx))
	})
	if err != nil {
		return nil, fmt.Errorf("connect to systemd: %w", err)
	}
	return service.NewSystemdBus(c), nil
}

type manager struct{ d *DBus }

type fileChange struct{ Type, Filename, Destination string }

func (m *manager) job(verb, name string, fn func(context.Context, string) error) (godbus.ObjectPath, *godbus.Error) {
	st, _ := m.d.sd.Unit(context.Background(), name)
	if st.LoadState == "not-found" {
		return "", godbus.NewError("org.freedesktop.systemd1.NoSuchUnit", []any{"Unit " + name + " not found."})
	}
	if st.LoadState == "masked" {
		return "", godbus.NewError("org.freedesktop.systemd1.UnitMasked", []any{"Unit " + name + " is masked."})
	}
	result := "done"
	if err := fn(context.Background(), name); err != nil {
		result = "failed"
	}
	id := m.d.jobs.Add(1)
	p := godbus.ObjectPath("/org/freedesktop/systemd1/job/" + strconv.Itoa(int(id)))
	go m.d.conn.Emit("/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager.JobRemoved", id, p, name, result) //nolint:errcheck
	return p, nil
}

func (m *manager) StartUnit(name, mode string) (godbus.ObjectPath, *godbus.Error) {
	return m.job("start", name, m.d.sd.Start)
}

func (m *manager) StopUnit(name, mode string) (godbus.ObjectPath, *godbus.Error) {
	return m.job("stop", name, m.d.sd.Stop)
}

func (m *manager) RestartUnit(name, mode string) (godbus.ObjectPath, *godbus.Error) {
	return m.job("restart", name, m.d.sd.Restart)
}

func (m *manager) ReloadUnit(name, mode string) (godbus.ObjectPath, *godbus.Error) {
	return m.job("reload", name, m.d.sd.Reload)
}

func (m *manager) EnableUnitFiles(files []string, runtime, force bool) (bool, []fileChange, *godbus.Error) {
	var out []fileChange
	for _, f := range files {
		if err := m.d.sd.Enable(context.Background(), f); err != nil {
			return false, nil, godbus.MakeFailedError(err)
		}
		out = append(out, fileChange{"symlink", "/etc/systemd/system/multi-user.target.wants/" + f, "/etc/systemd/system/" + f})
	}
	return true, out, nil
}

func (m *manager) DisableUnitFiles(files []string, runtime bool) ([]fileChange, *godbus.Error) {
	var out []fileChange
	for _, f := range files {
		if err := m.d.sd.Disable(context.Background(), f); err != nil {
			return nil, godbus.MakeFailedError(err)
		}
		out = append(out, fileChange{"unlink", "/etc/systemd/system/multi-user.target.wants/" + f, ""})
	}
	return out, nil
}

func (m *manager) Reload() *godbus.Error {
	if err := m.d.sd.DaemonReload(context.Background()); err != nil {
		return godbus.MakeFailedError(err)
	}
	return nil
}

type props struct{ d *DBus }

func (p *props) GetAll(msg godbus.Message, iface string) (map[string]godbus.Variant, *godbus.Error) {
	op, _ := msg.Headers[godbus.FieldPath].Value().(godbus.ObjectPath)
	name := unescape(path.Base(string(op)))
	st, err := p.d.sd.Unit(context.Background(), name)
	if err != nil {
		return nil, godbus.MakeFailedError(err)
	}
	return map[string]godbus.Variant{
		"Id":               godbus.MakeVariant(name),
		"LoadState":        godbus.MakeVariant(st.LoadState),
		"ActiveState":      godbus.MakeVariant(st.ActiveState),
		"UnitFileState":    godbus.MakeVariant(st.UnitFileState),
		"NeedDaemonReload": godbus.MakeVariant(st.NeedDaemonReload),
	}, nil
}

// unescape undoes sd-bus path escaping ("_2e" → ".").
func unescape(s string) string {
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '_' && i+2 < len(s) {
			if b, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				out = append(out, byte(b))
				i += 2
				continue
			}
		}
		out = append(out, s[i])
	}
	return string(out)
}
