// Package kubevalue reads what kdr needs from a Kubernetes object as
// kube-apiserver stores it in etcd: whether it is marked for deletion.
//
// kube-apiserver deletes an object with finalizers in two steps: it sets
// metadata.deletionTimestamp (an update of the key), and removes the key
// once the finalizers are done. A namespace's finalizer empties it in
// between. So undoing such a delete means going back before the mark, not
// just before the key went.
//
// Values are protobuf ("k8s\x00", then a runtime.Unknown whose raw bytes
// are the object, metadata first), JSON (custom resources), or encrypted
// at rest ("k8s:enc:"), which is opaque here. Only the wire format is
// read, with the standard library: no generated types, so any kind of
// object is read alike.
package kubevalue

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
)

// protoMagic starts kube-apiserver's protobuf encoding.
var protoMagic = []byte("k8s\x00")

// Field numbers of the protobuf messages read: runtime.Unknown's raw
// bytes, every object's metadata, and ObjectMeta's deletionTimestamp.
const (
	unknownRaw        = 2
	objectMetadata    = 1
	deletionTimestamp = 9
)

// MarkedForDeletion reports whether v is a Kubernetes object whose
// metadata.deletionTimestamp is set. A value it cannot read (encrypted,
// not an object, damaged) is not marked.
func MarkedForDeletion(v []byte) bool {
	switch {
	case bytes.HasPrefix(v, protoMagic):
		raw, ok := field(v[len(protoMagic):], unknownRaw)
		if !ok {
			return false
		}
		meta, ok := field(raw, objectMetadata)
		if !ok {
			return false
		}
		_, ok = field(meta, deletionTimestamp)
		return ok
	case bytes.HasPrefix(bytes.TrimLeft(v, " \t\r\n"), []byte("{")):
		var obj struct {
			Metadata struct {
				DeletionTimestamp *string `json:"deletionTimestamp"`
			} `json:"metadata"`
		}
		return json.Unmarshal(v, &obj) == nil && obj.Metadata.DeletionTimestamp != nil
	}
	return false
}

// field returns the bytes of the last length-delimited field num of the
// protobuf message m (the last one wins, as protobuf merges them), and
// whether m has one. A malformed message has none.
func field(m []byte, num uint64) ([]byte, bool) {
	var out []byte
	found := false
	for len(m) > 0 {
		tag, n := binary.Uvarint(m)
		if n <= 0 {
			return nil, false
		}
		m = m[n:]
		var size uint64
		switch tag & 7 {
		case 0: // varint
			if _, n = binary.Uvarint(m); n <= 0 {
				return nil, false
			}
			size = uint64(n)
		case 1: // fixed64
			size = 8
		case 2: // length-delimited
			l, n := binary.Uvarint(m)
			if n <= 0 || l > uint64(len(m)-n) {
				return nil, false
			}
			m = m[n:]
			if tag>>3 == num {
				out, found = m[:l], true
			}
			size = l
		case 5: // fixed32
			size = 4
		default: // groups are not used by Kubernetes
			return nil, false
		}
		if size > uint64(len(m)) {
			return nil, false
		}
		m = m[size:]
	}
	return out, found
}
