// Package agent runs kdr in the cluster: backups and pruning on cron
// schedules, never two runs of one job at once and never on a standby
// replica, Prometheus metrics, health and readiness probes, a read-only
// status page, configuration reload, and a Kubernetes Lease so only one
// replica works at a time. After each backup it stores the restore
// runbook beside the set, so every target holds a current printable copy.
package agent
