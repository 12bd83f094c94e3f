package replay

import (
	"context"
	"log/slog"
	"slices"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newZap gives etcd's storage a logger that passes its warnings and
// errors on to lg, and panics where etcd would exit the process, so that
// Replay can return the failure as an error.
func newZap(lg *slog.Logger) *zap.Logger {
	return zap.New(slogCore{lg: lg}, zap.WithFatalHook(zapcore.WriteThenPanic))
}

// slogCore is a zapcore.Core writing to a slog.Logger, from Warn up.
type slogCore struct {
	lg     *slog.Logger
	fields []zapcore.Field
}

func (c slogCore) Enabled(l zapcore.Level) bool { return l >= zapcore.WarnLevel }

func (c slogCore) With(fs []zapcore.Field) zapcore.Core {
	return slogCore{lg: c.lg, fields: append(slices.Clip(c.fields), fs...)}
}

func (c slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c slogCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range append(slices.Clip(c.fields), fs...) {
		f.AddTo(enc)
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	attrs := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		attrs = append(attrs, k, enc.Fields[k])
	}
	level := slog.LevelWarn
	if e.Level > zapcore.WarnLevel {
		level = slog.LevelError
	}
	c.lg.Log(context.Background(), level, "etcd: "+e.Message, attrs...)
	return nil
}

func (c slogCore) Sync() error { return nil }
