package drill

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/etcdutl"
	"go.etcd.io/etcd/pkg/v3/traceutil"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.uber.org/zap"

	"github.com/kdr-io/kdr/restore"
)

// checkEtcd proves the restored members whole: quorum with one leader,
// the revision past the backup's plus the bump, HashKV at the backup's
// revision equal to the one recorded when it was taken, and every key.
func checkEtcd(ctx context.Context, rep *Report, cli *clientv3.Client, plan *restore.Plan, snapshotDB string) {
	m := plan.Manifest
	leaders := map[uint64]bool{}
	var revision int64
	for _, ep := range cli.Endpoints() {
		st, err := cli.Status(ctx, ep)
		if err != nil {
			rep.add(Check{ID: "etcd-quorum", Subject: ep, Grade: Fail, Reason: "member does not answer: " + oneLine(err)})
			continue
		}
		leaders[st.Leader] = true
		revision = max(revision, st.Header.Revision)
	}
	if len(leaders) == 1 {
		rep.add(Check{ID: "etcd-quorum", Subject: m.Cluster, Grade: Pass,
			Reason: fmt.Sprintf("%d member(s) answer and agree on one leader", len(cli.Endpoints()))})
	} else {
		rep.add(Check{ID: "etcd-quorum", Subject: m.Cluster, Grade: Fail, Reason: fmt.Sprintf("members name %d leaders", len(leaders))})
	}
	floor := m.Etcd.Revision + int64(plan.Options.RevisionBump)
	grade := Pass
	if revision < floor {
		grade = Fail
	}
	rep.add(Check{ID: "etcd-revision", Subject: m.Cluster, Grade: grade,
		Reason: fmt.Sprintf("revision %d, at least %d wanted (backup revision %d + bump %d)", revision, floor, m.Etcd.Revision, plan.Options.RevisionBump)})

	hash, keys, err := offlineHashKV(snapshotDB, m.Etcd.Revision)
	switch {
	case err != nil:
		rep.add(Check{ID: "etcd-hashkv", Subject: m.ID, Grade: Fail, Reason: oneLine(err)})
	case m.Etcd.HashKV == 0:
		rep.add(Check{ID: "etcd-hashkv", Subject: m.ID, Grade: Warn, Reason: "the backup recorded no HashKV to compare with"})
	case hash != m.Etcd.HashKV:
		rep.add(Check{ID: "etcd-hashkv", Subject: m.ID, Grade: Fail,
			Reason: fmt.Sprintf("HashKV at revision %d is %d, the backup recorded %d", m.Etcd.Revision, hash, m.Etcd.HashKV)})
	default:
		rep.add(Check{ID: "etcd-hashkv", Subject: m.ID, Grade: Pass,
			Reason: fmt.Sprintf("HashKV at revision %d is %d, as recorded when the backup was taken", m.Etcd.Revision, hash)})
	}
	if err != nil {
		return
	}
	resp, err := cli.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithCountOnly())
	switch {
	case err != nil:
		rep.add(Check{ID: "etcd-keys", Subject: m.Cluster, Grade: Fail, Reason: oneLine(err)})
	case resp.Count != keys:
		rep.add(Check{ID: "etcd-keys", Subject: m.Cluster, Grade: Fail, Reason: fmt.Sprintf("%d keys served, the snapshot holds %d", resp.Count, keys)})
	default:
		rep.Keys = keys
		rep.add(Check{ID: "etcd-keys", Subject: m.Cluster, Grade: Pass, Reason: fmt.Sprintf("%d keys served, as in the snapshot", keys)})
	}
}

// offlineHashKV computes etcd's HashKV at rev on a snapshot file, as
// `etcdutl hashkv` does, and counts the keys at the snapshot's newest
// revision. It works on a copy, as opening the database may write to it.
func offlineHashKV(path string, rev int64) (hash uint32, keys int64, err error) {
	if err := restore.PrepareSnapshotDB(path); err != nil {
		return 0, 0, err
	}
	be := backend.NewDefaultBackend(zap.NewNop(), path)
	defer be.Close()
	st := mvcc.NewStore(zap.NewNop(), be, &etcdutl.SimpleLessor{}, mvcc.StoreConfig{})
	defer st.Close()
	h, _, err := mvcc.NewHashStorage(zap.NewNop(), st).HashByRev(rev)
	if err != nil {
		return 0, 0, fmt.Errorf("HashKV at revision %d: %w", rev, err)
	}
	txn := st.Read(mvcc.ConcurrentReadTxMode, traceutil.TODO())
	defer txn.End()
	r, err := txn.Range(context.Background(), []byte{0}, []byte{}, mvcc.RangeOptions{CountOnly: true})
	if err != nil {
		return 0, 0, fmt.Errorf("count keys: %w", err)
	}
	return h.Hash, int64(r.Count), nil
}

// checkDrift compares a sample of the restored keys with the live
// cluster's. Drift is expected (the cluster moved on since the backup):
// it is reported, not failed.
func checkDrift(ctx context.Context, rep *Report, restored, live *clientv3.Client) {
	const sample = 100
	resp, err := restored.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithLimit(sample))
	if err != nil {
		rep.add(Check{ID: "drift", Subject: "live cluster", Grade: Warn, Reason: oneLine(err)})
		return
	}
	changed, gone := 0, 0
	for _, kv := range resp.Kvs {
		lr, err := live.Get(ctx, string(kv.Key))
		if err != nil {
			rep.add(Check{ID: "drift", Subject: "live cluster", Grade: Warn, Reason: "live cluster unreachable: " + oneLine(err)})
			return
		}
		switch {
		case len(lr.Kvs) == 0:
			gone++
		case string(lr.Kvs[0].Value) != string(kv.Value):
			changed++
		}
	}
	rep.add(Check{ID: "drift", Subject: "live cluster", Grade: Pass,
		Reason: fmt.Sprintf("of %d sampled keys, %d changed and %d deleted on the live cluster since the backup", len(resp.Kvs), changed, gone)})
}
