// Package doctor grades a deployment of kdr against what a production
// control plane needs: an etcd that survives the loss of a member and of a
// host, headroom under its quota, fresh backups in more than one failure
// domain, backups nobody can delete with a stolen credential, a restore
// that was proven by a drill, certificates that are not about to expire,
// and more than one key that can decrypt.
//
// Each check is a value in one list (an ID, what it checks, a function),
// graded pass, warn or fail with a one-line reason that carries the
// numbers, and the numbers again as evidence for machines. Run gathers
// what the checks look at first (etcd's member list and every member's
// status, the sets and drill reports on each target, the newest
// manifest), so the grading functions are pure and take plain values.
// Nothing a check reads is lost to another: an etcd that does not answer
// fails the etcd checks with the reason and the rest still run, and a
// target that cannot be opened or listed is named by the checks that need
// it.
//
// Thresholds and the reasoning behind them:
//
//   - etcd-members counts voting members (learners do not vote): 1 fails
//     (no redundancy); an even count warns, as it tolerates no more
//     failures than one member fewer; 3, 5 and more odd counts pass.
//   - etcd-hosts groups voting members by the host of their first peer
//     URL, every loopback address being one host. All members on one host
//     fail, a single member included: losing that host loses etcd, and the
//     member check alone would not say that the host is the reason. A
//     spread whose most loaded host holds a quorum-breaking share (2+1)
//     warns: it survives no more host failures than one host. A spread that
//     survives as many host failures as the member count allows passes.
//   - etcd-quota: the fullest member's database above 60% of its quota
//     warns, above 80% fails (etcd refuses writes at 100%). A member that
//     does not report its quota is taken to have etcd's default, 2 GiB.
//   - etcd-fragmentation: more than half of a database free and more than
//     100 MiB of it warns; a defrag gives it back.
//   - etcd-leader-changes: fewer voting members reachable than a quorum,
//     members naming different leaders, or no leader fail; an unreachable
//     member or members in different raft terms warn.
//   - backup-age: per target, the newest complete backup's age against the
//     longest gap between runs of schedule.backup: up to 2 gaps passes, up
//     to 4 warns, older or none fails, as does a target that cannot be
//     listed.
//   - targets-failure-domains: a local (offline) target and an S3 (remote)
//     one pass; one target, or targets of one kind, warn.
//   - object-lock: read from each S3 bucket, not from the config. A
//     target with objectLock on a bucket without Object Lock fails (its
//     backups fail); a bucket whose objects get no retention, from the
//     target's objectLock or the bucket's default, warns, as does a bucket
//     whose configuration cannot be read.
//   - drill: the newest report under "<cluster>/drills/<id>.json" on any
//     target. None warns, a failed one fails, one older than 100 days or
//     with warnings warns.
//   - certificates: in the newest backup's manifest, an expired
//     certificate fails and one expiring within 30 days warns.
//   - recipients: none fails, one warns (a lost key is a lost backup).
//   - static-pods: the files this host's static pod manifests reference
//     (flags and the configs they name, as a backup finds them), against
//     those the newest backup recorded. All held passes; a file referenced
//     since (an encryption config added after the backup) warns, naming
//     it, as the next backup captures it; a referenced file this host
//     cannot give fails, as the next backup fails on it. A host without
//     static pods (external etcd under systemd) passes.
//   - recovery-kit: per local target, the offline recovery kit (package
//     kit). One that does not verify fails: its binary must not be run.
//     None, one that cannot be read, or one whose kdr is not this
//     version warns (the next backup writes it). No local target passes;
//     targets-failure-domains grades that.
package doctor
