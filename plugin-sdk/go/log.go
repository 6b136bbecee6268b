package baton

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"strings"
)

// initLogging sends log/slog's default logger to stderr, one line a record, starting
// with its level (the host logs a captured line that starts with ERROR, WARN, INFO or
// DEBUG at that level) and without a time (the host stamps every line it captures).
func initLogging() {
	level := slog.LevelInfo
	// BATON_LOG is shared with the Rust SDK, where it may be a filter such as
	// "baton=debug"; anything but a plain level name means INFO here.
	_ = level.UnmarshalText([]byte(strings.TrimSpace(os.Getenv("BATON_LOG"))))
	handler := slog.NewTextHandler(levelFirst{os.Stderr}, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
	slog.SetDefault(slog.New(handler))
}

// levelFirst turns the text handler's "level=INFO msg=..." into "INFO msg=...". The
// handler writes each record in one Write, starting with the level once the time is
// left out.
type levelFirst struct{ w io.Writer }

func (l levelFirst) Write(p []byte) (int, error) {
	if rest, ok := bytes.CutPrefix(p, []byte("level=")); ok {
		if _, err := l.w.Write(rest); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return l.w.Write(p)
}
