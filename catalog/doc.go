// Package catalog reads what is on a target: which backup sets exist,
// which are complete, their manifests and the hash chain between them. It
// lists sets across targets, resolves references to them ("latest", an ID
// or its prefix, the newest before a time), verifies sets and applies the
// retention policy. It never writes a set; package snapshot does.
//
// Verification streams every object once: the stored bytes are hashed
// while, given identities, the same bytes are decrypted, decompressed and
// checked (etcd's trailing hash, the state tar against its index). Memory
// stays bounded by a few buffers and the state index, whatever the sizes.
//
// Prune is the only writer besides snapshot, and writes one kind of
// object: a tombstone, "<cluster>/pruned/<id>.json" holding
// {"id", "sha256", "pruned"}, the sha256 of the manifest of a complete set
// it removed. The manifest that links the removed one still names that
// sha256, so the chain check can tell a deliberate gap from a deleted
// backup. A set is removed tombstone first, manifest second, objects last
// (its captured log among them): an interrupted prune leaves an
// incomplete set, never a complete set with missing objects. A kept set's
// log that retention.keepLog gives up gets a tombstone of its own,
// "<cluster>/pruned/<id>.log.json" (LogTombstone), before its objects go.
package catalog
