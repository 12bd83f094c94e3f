// Package action is the use-case layer under every front end, as helm's
// pkg/action is: `kdr backup`, `kdr prune`, `kdr list`, `kdr drill` and the
// agent's scheduled jobs call the same functions here, so a rule such as
// "only sets a trusted key signed count" or "a runbook is stored beside
// every set" lives in one place. cmd/kdr and package agent keep only flags,
// schedules, output and metrics.
//
// An Env is loaded once per command or per scheduled run from the config:
// the trusted keys, the opened targets and, for the use cases that write,
// the signing key.
package action
