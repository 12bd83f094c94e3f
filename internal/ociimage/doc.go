// Package ociimage writes a container image as an OCI archive (image-spec
// v1.1): one tar stream holding oci-layout, index.json and
// blobs/sha256/<hex> for the config, the manifest and a single gzipped
// layer. `ctr images import` and `skopeo copy oci-archive:` read it, so
// kdr's image is built without a registry, a daemon or root.
//
// The archive is reproducible: the same Image (same file contents, modes,
// names and Created) gives the same bytes and the same manifest digest on
// any host built with the same Go toolchain (the gzip stream is
// compress/flate's, whose output may change between Go releases). To get
// there, every tar entry, in the layer and in the archive, has uid and gid
// 0, no user or group names, the one timestamp Created, names in sorted
// order and the USTAR format (no PAX records); the gzip header has no name
// and no time.
//
// Files are streamed: the layer is written once to a temporary file while
// both its digests (of the tar, the config's diff_id, and of the gzip, the
// blob's) are computed, then copied into the archive, whose tar headers need
// the layer's size first. Nothing is written to the destination until the
// layer is complete, so a missing or changed source file leaves it
// untouched.
package ociimage
