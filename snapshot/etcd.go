package snapshot

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/kdr-io/kdr/manifest"
)

// Member preferences for choosing which member streams the snapshot.
const (
	PreferFollower = "follower"
	PreferLeader   = "leader"
	PreferAny      = "any"
)

// ErrNoMember means no member of the cluster answered.
var ErrNoMember = errors.New("no etcd member reachable")

// EtcdOptions say how to reach an etcd cluster.
type EtcdOptions struct {
	Endpoints []string
	// TLS is nil for plain http endpoints.
	TLS      *tls.Config
	Username string
	Password string
	// Prefer is PreferFollower (default), PreferLeader or PreferAny.
	Prefer      string
	DialTimeout time.Duration
}

// member is one endpoint as seen at the start of a backup.
type member struct {
	endpoint string
	id       uint64
	name     string
	leader   bool
	learner  bool
	version  string
}

// cluster is what a backup learns about etcd before streaming.
type clusterInfo struct {
	id      uint64
	members []manifest.Member
	// candidates are the reachable endpoints in the order to try them.
	candidates []member
}

// Connect opens a client of the whole cluster, for callers other than
// the snapshot stream (the log capture's watch).
func (o EtcdOptions) Connect() (*clientv3.Client, error) { return o.dial(o.Endpoints, nil) }

// client opens a client that streams snapshots.
func (o EtcdOptions) client(endpoints []string) (*clientv3.Client, error) {
	return o.dial(endpoints, snapshotDialOptions)
}

func (o EtcdOptions) dial(endpoints []string, opts []grpc.DialOption) (*clientv3.Client, error) {
	timeout := o.DialTimeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		TLS:                  o.TLS,
		Username:             o.Username,
		Password:             o.Password,
		DialTimeout:          timeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 10 * time.Second,
		Logger:               zap.NewNop(),
		DialOptions:          opts,
	})
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %v: %w", endpoints, err)
	}
	return cli, nil
}

// inspect asks every endpoint for its status and the member list, and
// orders the reachable members by preference.
func inspect(ctx context.Context, o EtcdOptions, log *slog.Logger) (*clusterInfo, error) {
	timeout := o.DialTimeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	type status struct {
		m   member
		err error
	}
	results := make([]status, len(o.Endpoints))
	var wg sync.WaitGroup
	for i, ep := range o.Endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = status{m: member{endpoint: ep}}
			cli, err := o.client([]string{ep})
			if err != nil {
				results[i].err = err
				return
			}
			defer cli.Close()
			sctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			st, err := cli.Status(sctx, ep)
			if err != nil {
				results[i].err = fmt.Errorf("status of %s: %w", ep, err)
				return
			}
			results[i].m.id = st.Header.MemberId
			results[i].m.leader = st.Leader == st.Header.MemberId
			results[i].m.learner = st.IsLearner
			results[i].m.version = st.Version
			if len(st.Errors) > 0 {
				results[i].err = fmt.Errorf("member at %s reports errors: %v", ep, st.Errors)
			}
		}()
	}
	wg.Wait()

	var alive []member
	var errs []error
	seen := map[uint64]bool{}
	for _, r := range results {
		switch {
		case r.err != nil:
			log.Warn("etcd member unavailable", "endpoint", r.m.endpoint, "err", r.err)
			errs = append(errs, r.err)
		case r.m.learner:
			// A learner may lag and cannot answer HashKV: never the source.
			log.Info("skipping learner", "endpoint", r.m.endpoint)
		case seen[r.m.id]:
			// Two endpoints of one member: a retry must go to another member.
		default:
			seen[r.m.id] = true
			alive = append(alive, r.m)
		}
	}
	if len(alive) == 0 {
		return nil, fmt.Errorf("%w: %w", ErrNoMember, errors.Join(errs...))
	}

	cli, err := o.client([]string{alive[0].endpoint})
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	lctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ml, err := cli.MemberList(lctx)
	if err != nil {
		return nil, fmt.Errorf("member list from %s: %w", alive[0].endpoint, err)
	}
	info := &clusterInfo{id: ml.Header.ClusterId}
	names := map[uint64]string{}
	for _, m := range ml.Members {
		names[m.ID] = m.Name
		info.members = append(info.members, manifest.Member{
			ID:         strconv.FormatUint(m.ID, 16),
			Name:       m.Name,
			PeerURLs:   m.PeerURLs,
			ClientURLs: m.ClientURLs,
			IsLearner:  m.IsLearner,
		})
	}
	for i := range alive {
		alive[i].name = names[alive[i].id]
	}
	info.candidates = orderCandidates(alive, o.Prefer)
	return info, nil
}

// orderCandidates sorts members so the preferred kind comes first; the
// order within a kind follows the configured endpoints.
func orderCandidates(ms []member, prefer string) []member {
	rank := func(m member) int {
		switch {
		case prefer == PreferLeader && m.leader, prefer != PreferLeader && prefer != PreferAny && !m.leader:
			return 0
		case prefer == PreferAny:
			return 0
		}
		return 1
	}
	out := append([]member(nil), ms...)
	sort.SliceStable(out, func(i, j int) bool { return rank(out[i]) < rank(out[j]) })
	return out
}

// etcdSnapshot is an open snapshot stream from one member.
type etcdSnapshot struct {
	member         member
	revision       int64
	storageVersion string
	reader         *manifest.SnapshotReader
	body           io.Closer
	cli            *clientv3.Client
	// hashKV reports the member's HashKV at revision; computed while the
	// snapshot streams so it costs no wall time.
	hashKV chan hashResult
}

type hashResult struct {
	hash            uint32
	compactRevision int64
	err             error
}

// openSnapshot starts streaming from one member. The client talks to that
// member alone so the client library cannot silently switch members mid-stream.
func openSnapshot(ctx context.Context, o EtcdOptions, m member) (*etcdSnapshot, error) {
	cli, err := o.client([]string{m.endpoint})
	if err != nil {
		return nil, err
	}
	st, err := cli.Status(ctx, m.endpoint)
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("status of %s: %w", m.endpoint, err)
	}
	// The snapshot is taken after this status answered, on the same member,
	// so it holds at least this revision.
	rev := st.Header.Revision
	resp, err := cli.SnapshotWithVersion(ctx)
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("open snapshot stream from %s: %w", m.endpoint, err)
	}
	s := &etcdSnapshot{
		member:         m,
		revision:       rev,
		storageVersion: resp.Version,
		reader:         manifest.NewSnapshotReader(resp.Snapshot),
		body:           resp.Snapshot,
		cli:            cli,
		hashKV:         make(chan hashResult, 1),
	}
	go func() {
		h, err := cli.HashKV(ctx, m.endpoint, rev)
		if err != nil {
			s.hashKV <- hashResult{err: err}
			return
		}
		s.hashKV <- hashResult{hash: h.Hash, compactRevision: h.CompactRevision}
	}()
	return s, nil
}

// Close stops the stream and releases the connection.
func (s *etcdSnapshot) Close() error {
	err := s.body.Close()
	s.cli.Close()
	return err
}
