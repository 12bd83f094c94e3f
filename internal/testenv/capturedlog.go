package testenv

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// CapturedLog writes the captured log that continues a full set by hand,
// in the format the agent's capture writes (docs/format.md, "The
// captured log"): each body sealed to the recipients, each head signed
// and linked to the one before it.
type CapturedLog struct {
	Target     storage.Target
	Key        *SigningKey
	Recipients []crypto.Recipient
	// Base is the set the log continues, BaseSum the sha256 of its
	// manifest's bytes as stored.
	Base    *manifest.Manifest
	BaseSum string

	prev *manifest.SegmentLink
}

// PutSet stores the signed manifest of a full set of cluster prod, taken
// on cp1 at created with etcd at revision rev, and returns the captured
// log that continues it, its segments sealed to recipients and signed
// with key. The set names an etcd snapshot it never stores: enough for
// what reads only manifests and logs (list, plan, history, prune, the
// window), so those tests need no etcd to back up. Its ID is drawn from
// created and rev, so sets at different revisions differ even when
// created at the same time.
func PutSet(t testing.TB, target storage.Target, key *SigningKey, recipients []crypto.Recipient, created time.Time, rev int64) *CapturedLog {
	t.Helper()
	m := &manifest.Manifest{FormatVersion: manifest.FormatVersion, KdrVersion: "test", ID: manifest.NewID(created, [3]byte{byte(rev >> 16), byte(rev >> 8), byte(rev)}),
		Cluster: "prod", Created: created, Completed: created.Add(time.Second), Node: "cp1", Etcd: manifest.Etcd{Revision: rev, DBSize: 1 << 20},
		Objects: []manifest.Object{{Name: manifest.EtcdObject, Kind: manifest.KindEtcdSnapshot,
			PlainSize: 1 << 20, PlainSHA256: strings.Repeat("a", 64), Size: 1 << 19, SHA256: strings.Repeat("b", 64)}}}
	raw, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := manifest.PutSigned(context.Background(), target, manifest.Key(m.Cluster, m.ID, manifest.ManifestObject), raw, manifest.NamespaceManifest, key.Signer, storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	return &CapturedLog{Target: target, Key: key, Recipients: recipients, Base: m, BaseSum: manifest.Sum(raw)}
}

// Append stores one segment holding revs, which follow the last segment
// (or the set), with the lease records and, when hash is set, etcd's
// HashKV at its last revision. It returns the head's key.
func (l *CapturedLog) Append(t testing.TB, revs []manifest.LogRevision, leases []manifest.LeaseRecord, hash *manifest.LogHash) string {
	t.Helper()
	ctx := context.Background()
	var enc manifest.LogEncoder
	for _, r := range leases {
		enc.AddLease(r)
	}
	for _, r := range revs {
		if err := enc.AddRevision(r); err != nil {
			t.Fatal(err)
		}
	}
	first, last, seenFirst, seenLast := enc.Range()
	var body bytes.Buffer
	w, err := manifest.NewObjectWriter(&body, l.Recipients, manifest.WriteOptions{Name: manifest.SegmentBodyName(first, last), Kind: manifest.KindLog})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enc.WriteTo(w); err != nil {
		t.Fatal(err)
	}
	obj, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	m := l.Base
	if err := l.Target.Put(ctx, manifest.SegmentBodyKey(m.Cluster, m.ID, first, last), &body, storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	h := &manifest.SegmentHead{
		FormatVersion: manifest.FormatVersion, KdrVersion: "test", Cluster: m.Cluster,
		Base:  manifest.Link{ID: m.ID, SHA256: l.BaseSum},
		First: first, Last: last, Prev: l.prev, SeenFirst: seenFirst, SeenLast: seenLast,
		Body: obj, Leases: len(leases), HashKV: hash, Writer: "test",
	}
	for _, r := range l.Recipients {
		h.Recipients = append(h.Recipients, r.Fingerprint)
	}
	data, err := h.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	key := manifest.SegmentHeadKey(m.Cluster, m.ID, first)
	if err := manifest.PutSegmentHead(ctx, l.Target, key, data, l.Key.Signer); err != nil {
		t.Fatal(err)
	}
	l.prev = h.Link(manifest.Sum(data))
	return key
}

// WatchLog reads revisions from..to of the cluster cli talks to as a
// capture's watch sees them: every event of each revision, in order.
func WatchLog(t testing.TB, cli *clientv3.Client, from, to int64) []manifest.LogRevision {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out []manifest.LogRevision
	for resp := range cli.Watch(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(from)) {
		if err := resp.Err(); err != nil {
			t.Fatalf("watch from %d: %v", from, err)
		}
		for _, ev := range resp.Events {
			kv := ev.Kv
			if kv.ModRevision > to {
				return out
			}
			if n := len(out); n == 0 || out[n-1].Revision != kv.ModRevision {
				out = append(out, manifest.LogRevision{Revision: kv.ModRevision, Seen: time.Now().UTC()})
			}
			r := &out[len(out)-1]
			if ev.Type == mvccpb.DELETE {
				r.Events = append(r.Events, manifest.LogEvent{Delete: true, Key: kv.Key})
				continue
			}
			r.Events = append(r.Events, manifest.LogEvent{Key: kv.Key, Value: kv.Value,
				CreateRevision: kv.CreateRevision, Version: kv.Version, Lease: kv.Lease})
		}
		if n := len(out); n > 0 && out[n-1].Revision == to {
			return out
		}
	}
	t.Fatalf("watch from %d ended before revision %d", from, to)
	return nil
}

// HashKV is etcd's HashKV at rev on endpoint, as a segment head records it.
func HashKV(t testing.TB, cli *clientv3.Client, endpoint string, rev int64) *manifest.LogHash {
	t.Helper()
	resp, err := cli.HashKV(context.Background(), endpoint, rev)
	if err != nil {
		t.Fatalf("HashKV at %d: %v", rev, err)
	}
	return &manifest.LogHash{Revision: rev, CompactRevision: resp.CompactRevision, Hash: resp.Hash}
}

// Creates are revisions first..last, each creating one key of its own
// (/k/<revision>), seen when seen says: the plainest log there is, for
// tests of what reads chains rather than what is in them.
func Creates(first, last int64, seen func(rev int64) time.Time) []manifest.LogRevision {
	var out []manifest.LogRevision
	for r := first; r <= last; r++ {
		out = append(out, manifest.LogRevision{Revision: r, Seen: seen(r),
			Events: []manifest.LogEvent{{Key: fmt.Appendf(nil, "/k/%d", r), Value: []byte("v"), CreateRevision: r, Version: 1}}})
	}
	return out
}
