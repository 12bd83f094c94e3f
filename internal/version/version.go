// Package version holds the version stamped into the binary at build time.
package version

// Version is set with -ldflags "-X github.com/kdr-io/kdr/internal/version.Version=...".
var Version = "dev"
