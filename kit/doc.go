// Package kit writes and checks the offline recovery kit: the directory
// kit/ at the root of every local target, beside the clusters' sets.
//
// The cluster that held kdr's config, its credentials and its image is
// the one that is lost, and the network may be gone with it. The kit makes
// the disk enough: with it and an age identity, a blank host restores with
// the kit's own kdr binary (static, so no Go and no matching libc), the
// standard tools the runbook's break-glass path uses when the writing host
// had them, each cluster's newest runbook, the trusted signing keys as an
// OpenSSH allowed_signers file, and a kdr.yaml that names this disk by a
// path relative to itself and holds no secret.
//
// Every file is listed in SHA256SUMS, signed like every other object a
// reader trusts (namespace kdr-kit), so an operator checks the kit with
// ssh-keygen and sha256sum before running anything in it. Refresh runs
// after every backup: it hashes what the kit already holds and rewrites
// only what changed, so a backup every 30 minutes does not copy a 60 MB
// binary every 30 minutes. Check verifies a kit and reads the version of
// its binary, for kdr doctor.
//
// The kit is only as trustworthy as the keys it is checked against:
// whoever can write to the disk can write a new allowed_signers file and
// sign with a key of their own. The operator compares the kit's keys with
// a copy held elsewhere (a printed runbook) first; README.txt says so.
package kit
