// Package logging builds the logger of every vpcnet process. A plugin's
// stdout is its CNI result and a command's stdout its output, so logs go to
// a file (VPCNET_LOG_FILE, JSON lines) and, from warning level up, to stderr;
// never to stdout.
package logging

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
)

// Environment variables that steer logging.
const (
	EnvLogFile  = "VPCNET_LOG_FILE"
	EnvLogLevel = "VPCNET_LOG_LEVEL" // debug, info (default), warn, error
)

// New builds the logger of a vpcnet process. component names the
// binary ("vpc-eni"). The returned close function flushes and closes the log
// file.
func New(component string) (*slog.Logger, func()) {
	level := parseLevel(os.Getenv(EnvLogLevel))
	handlers := []slog.Handler{
		slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}),
	}
	closeFn := func() {}
	if path := os.Getenv(EnvLogFile); path != "" {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err == nil {
			handlers = append(handlers, slog.NewJSONHandler(f, &slog.HandlerOptions{Level: level}))
			closeFn = func() { f.Close() }
		} else {
			slog.New(handlers[0]).Warn("cannot open log file", "path", path, "err", err)
		}
	}
	l := slog.New(fanout(handlers)).With("component", component, "pid", os.Getpid())
	return l, closeFn
}

func parseLevel(s string) slog.Level {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// fanout sends each record to every handler that wants it.
type fanout []slog.Handler

func (f fanout) Enabled(ctx context.Context, l slog.Level) bool {
	for _, h := range f {
		if h.Enabled(ctx, l) {
			return true
		}
	}
	return false
}

func (f fanout) Handle(ctx context.Context, r slog.Record) error {
	var errs []error
	for _, h := range f {
		if h.Enabled(ctx, r.Level) {
			errs = append(errs, h.Handle(ctx, r.Clone()))
		}
	}
	return errors.Join(errs...)
}

func (f fanout) WithAttrs(as []slog.Attr) slog.Handler {
	out := make(fanout, len(f))
	for i, h := range f {
		out[i] = h.WithAttrs(as)
	}
	return out
}

func (f fanout) WithGroup(name string) slog.Handler {
	out := make(fanout, len(f))
	for i, h := range f {
		out[i] = h.WithGroup(name)
	}
	return out
}

// Discard is a logger that drops everything, for in-process tests.
var Discard = slog.New(slog.NewTextHandler(io.Discard, nil))
