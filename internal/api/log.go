package api

import "log/slog"

// levelFor logs server errors as errors, client errors as info, the rest at debug level (metrics count them).
func levelFor(code int) slog.Level {
	switch {
	case code >= 500:
		return slog.LevelError
	case code >= 400:
		return slog.LevelInfo
	}
	return slog.LevelDebug
}
