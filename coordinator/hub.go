package coordinator

import (
	"sync"
	"time"

	"github.com/hivefleet/hive/coordinator/fsm"
)

// hub wakes every watch stream when something that may change a node's
// state was applied. It is one channel, closed and replaced on each
// broadcast, so waking thousands of streams costs one close. Generation,
// secret and restore changes broadcast at once; registry changes (nodes
// joining, changing labels or addresses) are coalesced over debounce, so a
// storm of joining agents does not re-render every node per join.
//
// onApply runs on raft's FSM goroutine and never blocks.
type hub struct {
	debounce time.Duration

	mu      sync.Mutex
	ch      chan struct{}
	pending bool
}

func newHub(debounce time.Duration) *hub {
	return &hub{debounce: debounce, ch: make(chan struct{})}
}

// wait returns a channel closed at the next broadcast. Take it before
// reading the state, so no change is missed.
func (h *hub) wait() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ch
}

func (h *hub) broadcast() {
	h.mu.Lock()
	close(h.ch)
	h.ch = make(chan struct{})
	h.mu.Unlock()
}

func (h *hub) onApply(c fsm.Change) {
	switch {
	case c&(fsm.ChangeGeneration|fsm.ChangeSecrets|fsm.ChangeRevocations|fsm.ChangeRollout) != 0:
		h.broadcast()
	case c&fsm.ChangeRegistry != 0:
		h.mu.Lock()
		if h.pending {
			h.mu.Unlock()
			return
		}
		h.pending = true
		h.mu.Unlock()
		time.AfterFunc(h.debounce, func() {
			h.mu.Lock()
			h.pending = false
			h.mu.Unlock()
			h.broadcast()
		})
	}
}
