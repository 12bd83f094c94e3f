// Package snapshot takes backups: it streams an etcd snapshot from a
// chosen member while checking etcd's trailing sha256, captures the
// off-etcd state (PKI, kubeconfigs, manifests, LB and DNS files) into a tar
// with an index, compresses and encrypts both on the fly, and writes them to
// every target at once. The manifest goes up last, so a backup that fails
// halfway leaves no complete set behind.
package snapshot
