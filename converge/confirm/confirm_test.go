package confirm_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hivefleet/hive/converge/confirm"
)

// TestWindowEndsOnce: confirmed before the deadline, a window never rolls
// back; unconfirmed, it rolls back once at the deadline; a failed
// rollback ends RollbackFailed; a superseded window does not roll back;
// every second ending fails with ErrClosed.
func TestWindowEndsOnce(t *testing.T) {
	var rolled atomic.Int32
	rb := func(context.Context) error { rolled.Add(1); return nil }

	w := confirm.New(time.Now().Add(200*time.Millisecond), rb)
	if err := w.Confirm(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if st, _, _ := w.State(); st != confirm.Confirmed || rolled.Load() != 0 {
		t.Fatalf("confirmed window: %v, %d rollbacks", st, rolled.Load())
	}

	w = confirm.New(time.Now().Add(50*time.Millisecond), rb)
	<-w.Done()
	if st, ended, _ := w.State(); st != confirm.RolledBack || ended.Before(w.Deadline()) || rolled.Load() != 1 {
		t.Fatalf("expired window: %v at %v (deadline %v), %d rollbacks", st, ended, w.Deadline(), rolled.Load())
	}
	if err := w.Confirm(); !errors.Is(err, confirm.ErrClosed) {
		t.Fatalf("confirm after the rollback: %v", err)
	}

	boom := errors.New("boom")
	w = confirm.New(time.Now().Add(time.Hour), func(context.Context) error { return boom })
	if err := w.Rollback(t.Context()); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if st, _, err := w.State(); st != confirm.RollbackFailed || !errors.Is(err, boom) {
		t.Fatalf("failed rollback: %v %v", st, err)
	}

	w = confirm.New(time.Now().Add(50*time.Millisecond), rb)
	if err := w.Supersede(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if st, _, _ := w.State(); st != confirm.Superseded || rolled.Load() != 1 {
		t.Fatalf("superseded window: %v, %d rollbacks", st, rolled.Load())
	}
}

// TestConfirmWithOneProber: the first ConfirmWith probes until the probe
// succeeds and confirms; a second one does not probe, and returns when
// the window ends.
func TestConfirmWithOneProber(t *testing.T) {
	w := confirm.New(time.Now().Add(time.Hour), func(context.Context) error { return nil })
	var probes atomic.Int32
	ok := make(chan struct{})
	probe := func(ctx context.Context) error {
		probes.Add(1)
		select {
		case <-ok:
			return nil
		default:
			return errors.New("unreachable")
		}
	}
	first := make(chan confirm.State)
	go func() { first <- w.ConfirmWith(t.Context(), 10*time.Millisecond, probe) }()
	for probes.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	second := make(chan confirm.State)
	go func() {
		second <- w.ConfirmWith(t.Context(), time.Millisecond, func(context.Context) error {
			t.Error("a second prober probed")
			return nil
		})
	}()
	time.Sleep(30 * time.Millisecond)
	close(ok)
	if st := <-first; st != confirm.Confirmed {
		t.Fatalf("first prober: %v", st)
	}
	if st := <-second; st != confirm.Confirmed {
		t.Fatalf("second prober: %v", st)
	}
}
