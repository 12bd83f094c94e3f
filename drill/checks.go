package drill

import (
	"context"
	"errors"
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
	floor := plan.MinRevision()
	grade := Pass
	if revision < floor {
		grade = Fail
	}
	what := "backup revision"
	if plan.ToRevision > 0 {
		what = "replayed revision"
	}
	rep.add(Check{ID: "etcd-revision", Subject: m.Cluster, Grade: grade,
		Reason: fmt.Sprintf("revision %d, at least %d wanted (%s %d + bump %d)", revision, floor, what, plan.RestoredRevision(), plan.Bump())})

	// A replayed database holds the set's revisions unchanged below the
	// replayed ones: HashKV at the set's revision proves those too, unless
	// the replay compacted past it to prove itself against the source's
	// HashKV, which then stands for the set's.
	hash, keys, restored, err := offlineHashKV(snapshotDB, m.Etcd.Revision)
	replayCompacted := plan.ToRevision > 0 && errors.Is(err, mvcc.ErrCompacted)
	if replayCompacted {
		_, keys, restored, err = offlineHashKV(snapshotDB, plan.ToRevision)
	}
	if err == nil && plan.ToRevision > 0 {
		grade, reason := Pass, fmt.Sprintf("the database restored is at revision %d, the one asked for", restored)
		if restored != plan.ToRevision {
			grade, reason = Fail, fmt.Sprintf("the database restored is at revision %d, not %d", restored, plan.ToRevision)
		}
		rep.add(Check{ID: "replay-revision", Subject: m.Cluster, Grade: grade, Reason: reason})
	}
	switch {
	case err != nil:
		rep.add(Check{ID: "etcd-hashkv", Subject: m.ID, Grade: Fail, Reason: oneLine(err)})
	case replayCompacted && plan.Replay != nil && plan.Replay.Proof != nil:
		rep.add(Check{ID: "etcd-hashkv", Subject: m.ID, Grade: Pass,
			Reason: fmt.Sprintf("revision %d was compacted by the replay, which proved the keyspace against the source's HashKV instead", m.Etcd.Revision)})
	case replayCompacted:
		rep.add(Check{ID: "etcd-hashkv", Subject: m.ID, Grade: Warn,
			Reason: fmt.Sprintf("revision %d was compacted by the replay, and the log recorded no HashKV to prove it instead", m.Etcd.Revision)})
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
		rep.add(Check{ID: "etcd-keys", Subject: m.Cluster, Grade: Fail, Reason: fmt.Sprintf("%d keys served, the %s holds %d", resp.Count, dbName(plan), keys)})
	default:
		rep.Keys = keys
		rep.add(Check{ID: "etcd-keys", Subject: m.Cluster, Grade: Pass, Reason: fmt.Sprintf("%d keys served, as in the %s", keys, dbName(plan))})
	}
}

func dbName(plan *restore.Plan) string {
	if plan.ToRevision > 0 {
		return fmt.Sprintf("database replayed to revision %d", plan.ToRevision)
	}
	return "snapshot"
}

// checkReplay reports what the replay did on env's node: the revisions
// it applied, how long the slowest member's replay took, and the HashKV
// it proved itself against. A replay without a proof is a warning: every
// revision was checked as applied, the keyspace as a whole was not.
func checkReplay(rep *Report, env *restore.Env, plan *restore.Plan, node string) {
	rec, err := env.Replayed(node)
	if err == nil && rec == nil {
		err = fmt.Errorf("the replay on %s recorded nothing", node)
	}
	if err != nil {
		rep.add(Check{ID: "replay", Subject: node, Grade: Fail, Reason: oneLine(err)})
		return
	}
	r := &ReplaySummary{Base: rec.Base, Revision: rec.Revision, Applied: rec.Applied, Segments: rec.Segments}
	for _, s := range rep.Steps {
		if s.Step == restore.StepReplay {
			r.Seconds = max(r.Seconds, s.Seconds)
		}
	}
	subject := fmt.Sprintf("%s to revision %d", plan.BackupID, rec.Revision)
	did := fmt.Sprintf("%d revisions from %d segment(s) applied to the snapshot's %d in %.1f s", rec.Applied, rec.Segments, rec.Base, r.Seconds)
	if rec.Proved == nil {
		rep.add(Check{ID: "replay", Subject: subject, Grade: Warn,
			Reason: fmt.Sprintf("%s; the log recorded no HashKV at or before revision %d to prove the result against", did, rec.Revision)})
	} else {
		r.ProvedAt = rec.Proved.Revision
		rep.add(Check{ID: "replay", Subject: subject, Grade: Pass,
			Reason: fmt.Sprintf("%s; HashKV at revision %d is %d, as recorded when the log was captured", did, rec.Proved.Revision, rec.Proved.Hash)})
	}
	rep.Replay = r
}

// offlineHashKV computes etcd's HashKV at rev on a snapshot file, as
// `etcdutl hashkv` does, and counts the keys at the snapshot's newest
// revision, which it returns too. It works on a copy, as opening the
// database may write to it.
func offlineHashKV(path string, rev int64) (hash uint32, keys, newest int64, err error) {
	if err := restore.PrepareSnapshotDB(path); err != nil {
		return 0, 0, 0, err
	}
	be := backend.NewDefaultBackend(zap.NewNop(), path)
	defer be.Close()
	st := mvcc.NewStore(zap.NewNop(), be, &etcdutl.SimpleLessor{}, mvcc.StoreConfig{})
	defer st.Close()
	h, _, err := mvcc.NewHashStorage(zap.NewNop(), st).HashByRev(rev)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("HashKV at revision %d: %w", rev, err)
	}
	txn := st.Read(mvcc.ConcurrentReadTxMode, traceutil.TODO())
	defer txn.End()
	r, err := txn.Range(context.Background(), []byte{0}, []byte{}, mvcc.RangeOptions{CountOnly: true})
	if err != nil {
		return 0, 0, 0, fmt.Errorf("count keys: %w", err)
	}
	return h.Hash, int64(r.Count), txn.Rev(), nil
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
