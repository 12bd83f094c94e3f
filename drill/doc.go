// Package drill proves that a backup restores: it runs the restore plan,
// the same steps `kdr restore apply` runs, into a sandbox with the etcd
// members started in this process on loopback ports, checks quorum,
// revision, HashKV, keys, the PKI and the kubeconfigs, measures RTO and
// RPO, and writes a report (JSON, Markdown, PDF) kept beside the backups.
// A drill to a revision replays the set's captured log as a restore does,
// checks the restored database is at that revision with its proof, and
// reports the replay's time and the revisions it applied.
package drill
