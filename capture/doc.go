// Package capture ships every etcd revision between full sets: the
// agent's leader keeps one watch over the whole keyspace of a cluster,
// from the newest full set's revision on, and stores the revisions in
// signed, encrypted segments on every target (manifest's segment format),
// each naming the one before, so that a restore can replay them to any
// revision. One writer: segment heads are created conditionally, and a
// writer that finds a head taken stops. A watch that falls behind
// compaction, or a chain that cannot go on, asks for a new full set,
// which starts a new chain.
package capture
