package gossip

import (
	"bytes"
	"context"
	"log"
	"log/slog"
)

// newStdLogger adapts memberlist's *log.Logger lines ("[LEVEL] memberlist:
// text") to slog. memberlist's [ERR] lines are mostly transient network
// failures it recovers from, so they map to Warn: Error is for what an
// operator must act on.
func newStdLogger(l *slog.Logger) *log.Logger {
	return log.New(&slogWriter{l: l}, "", 0)
}

type slogWriter struct {
	l *slog.Logger
}

var levels = []struct {
	prefix []byte
	level  slog.Level
}{
	{[]byte("[DEBUG]"), slog.LevelDebug},
	{[]byte("[INFO]"), slog.LevelInfo},
	{[]byte("[WARN]"), slog.LevelWarn},
	{[]byte("[ERR]"), slog.LevelWarn},
	{[]byte("[ERROR]"), slog.LevelWarn},
}

func (w *slogWriter) Write(p []byte) (int, error) {
	line := bytes.TrimSpace(p)
	level := slog.LevelInfo
	for _, lv := range levels {
		if bytes.HasPrefix(line, lv.prefix) {
			level = lv.level
			line = bytes.TrimSpace(line[len(lv.prefix):])
			break
		}
	}
	line = bytes.TrimPrefix(line, []byte("memberlist: "))
	if w.l.Enabled(context.Background(), level) {
		w.l.Log(context.Background(), level, string(line))
	}
	return len(p), nil
}
