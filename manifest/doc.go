// Package manifest defines the backup set's on-target format: where the
// objects of a set live, manifest.json (the plain-JSON document written
// last, whose presence makes a set complete) and its signatures, and the
// objects themselves. ObjectWriter is the one writer of an object
// (plaintext, zstd, age) and ObjectReader the one reader, which holds the
// stored bytes and the plaintext to the manifest's record with the same
// limits for every command; CheckStateTar and ReadStateIndex hold the
// state tar to its index. The format is documented for people in
// docs/format.md; this package is its single definition in code.
package manifest
