package events

import (
	"fmt"
	"testing"
)

func TestRingSubscribeAndLag(t *testing.T) {
	h := New(3)
	for i := 1; i <= 5; i++ {
		h.Publish("push", "", fmt.Sprint(i), nil)
	}
	hist := h.History(0, Filter{})
	if len(hist) != 3 || hist[0].GetSeq() != 3 || hist[2].GetSeq() != 5 || hist[0].GetTime() == nil {
		t.Fatalf("history = %v", hist)
	}
	if got := h.History(4, Filter{}); len(got) != 1 || got[0].GetSeq() != 5 {
		t.Fatalf("since 4 = %v", got)
	}
	hist, sub := h.Subscribe(5, Filter{Kinds: []string{"node."}})
	if len(hist) != 0 {
		t.Fatalf("history after 5: %v", hist)
	}
	h.Publish("push", "", "skipped by filter", nil)
	h.Publish("node.phase", "web-1", "web-1 converged", nil)
	if e := <-sub.C(); e.GetKind() != "node.phase" || e.GetSeq() != 7 {
		t.Fatalf("live event = %v", e)
	}
	// A subscriber that falls behind is dropped, not waited for.
	for i := 0; i < SubscriberBuffer+1; i++ {
		h.Publish("node.left", "x", "", nil)
	}
	n := 0
	for range sub.C() {
		n++
	}
	if !sub.Lagged() || n != SubscriberBuffer {
		t.Fatalf("lagged = %v after %d events", sub.Lagged(), n)
	}
	sub.Close() // closing a dropped subscription is harmless
}

func TestMatchKind(t *testing.T) {
	for _, c := range []struct {
		patterns []string
		kind     string
		want     bool
	}{
		{nil, "push", true},
		{[]string{"*"}, "node.phase", true},
		{[]string{"push"}, "push", true},
		{[]string{"push"}, "pushed", false},
		{[]string{"node."}, "node.phase", true},
		{[]string{"node.*"}, "node.phase", true},
		{[]string{"node*"}, "nodes.x", true},
		{[]string{"node."}, "nodes.x", false},
		{[]string{"rollout.", "push"}, "generation.converged", false},
	} {
		if got := MatchKind(c.patterns, c.kind); got != c.want {
			t.Errorf("MatchKind(%v, %q) = %v", c.patterns, c.kind, got)
		}
	}
}
