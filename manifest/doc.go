// Package manifest defines the backup set's on-target format: where the
// objects of a set live, and manifest.json, the plain-JSON document written
// last whose presence makes a set complete. The format is documented for
// people in docs/format.md; this package is its single definition in code.
package manifest
