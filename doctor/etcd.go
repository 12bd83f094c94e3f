package doctor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/internal/fromconfig"
)

// etcdDefaultQuota is what etcd allows a database without
// --quota-backend-bytes; members older than 3.6 do not report their quota.
const etcdDefaultQuota = 2 << 30

// Fragmentation worth a defrag: more than half the file and more than this.
const fragmentedBytes = 100 << 20

// member is one etcd member as the member list gives it.
type member struct {
	id       uint64
	name     string
	peerURLs []string
	// clientURLs are tried for a member that no configured endpoint reaches.
	clientURLs []string
	learner    bool
}

// label names a member in reasons: its name, or its ID before it has one.
func (m member) label() string {
	if m.name != "" {
		return m.name
	}
	return strconv.FormatUint(m.id, 16)
}

// status is one member's answer to Status.
type status struct {
	leader      uint64
	raftTerm    uint64
	dbSize      int64
	dbSizeInUse int64
	// dbSizeQuota is 0 from a member that does not report it.
	dbSizeQuota int64
}

// etcdFacts is what etcd told about itself.
type etcdFacts struct {
	// err says why no member answered; the other fields are then empty.
	err     error
	members []member
	// status holds the answer of every member that gave one, by member ID.
	status map[uint64]status
	// unreachable says why a member gave none, by member ID.
	unreachable map[uint64]string
}

func (e etcdFacts) voters() []member {
	var vs []member
	for _, m := range e.members {
		if !m.learner {
			vs = append(vs, m)
		}
	}
	return vs
}

func (e etcdFacts) name(id uint64) string {
	for _, m := range e.members {
		if m.id == id {
			return m.label()
		}
	}
	return strconv.FormatUint(id, 16)
}

// answer is one endpoint's reply.
type answer struct {
	st   *clientv3.StatusResponse
	list *clientv3.MemberListResponse
	err  error
}

// probeEtcd asks every configured endpoint for its status and member
// list at once, then every member that no endpoint reached at its own
// client URLs, so that a config naming one endpoint still sees them all.
// Each question is bounded by the cluster's dial timeout.
func probeEtcd(ctx context.Context, c config.Cluster) etcdFacts {
	timeout := cmp.Or(c.Etcd.DialTimeout, config.DefaultDialTimeout)
	answers := make([]answer, len(c.Etcd.Endpoints))
	parallel(len(answers), func(i int) { answers[i] = ask(ctx, c, c.Etcd.Endpoints[i], timeout, true) })

	var list *clientv3.MemberListResponse
	var errs []string
	for _, a := range answers {
		switch {
		case a.err != nil:
			errs = append(errs, a.err.Error())
		case list == nil, a.st.Leader == a.st.Header.MemberId:
			// The leader's view of the membership is the one that commits.
			list = a.list
		}
	}
	if list == nil {
		slices.Sort(errs)
		return etcdFacts{err: fmt.Errorf("no etcd endpoint of cluster %s answered: %s", c.Name, strings.Join(slices.Compact(errs), "; "))}
	}
	f := etcdFacts{status: map[uint64]status{}, unreachable: map[uint64]string{}}
	for _, m := range list.Members {
		f.members = append(f.members, member{id: m.ID, name: m.Name, peerURLs: m.PeerURLs, clientURLs: m.ClientURLs, learner: m.IsLearner})
	}
	for _, a := range answers {
		if a.err == nil {
			f.status[a.st.Header.MemberId] = statusOf(a.st)
		}
	}
	var missing []member
	for _, m := range f.members {
		if _, ok := f.status[m.id]; !ok {
			missing = append(missing, m)
		}
	}
	found := make([]answer, len(missing))
	parallel(len(missing), func(i int) {
		found[i].err = fmt.Errorf("member %s advertises no client URL", missing[i].label())
		for _, u := range missing[i].clientURLs {
			if found[i] = ask(ctx, c, u, timeout, false); found[i].err == nil {
				return
			}
		}
	})
	for i, m := range missing {
		if found[i].err != nil {
			f.unreachable[m.id] = found[i].err.Error()
			continue
		}
		f.status[m.id] = statusOf(found[i].st)
	}
	return f
}

// ask asks one endpoint for its status and, with list, the member list as
// that member sees it (serializable, so a member cut off from the others
// still answers).
func ask(ctx context.Context, c config.Cluster, endpoint string, timeout time.Duration, list bool) answer {
	cli, err := fromconfig.EtcdClient(c, endpoint)
	if err != nil {
		return answer{err: err}
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, err := cli.Status(ctx, endpoint)
	switch {
	case err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		// gRPC keeps redialling a closed port until the deadline; its
		// error then says no more than that.
		return answer{err: fmt.Errorf("status of %s: no answer within %s", endpoint, timeout)}
	case err != nil:
		return answer{err: fmt.Errorf("status of %s: %w", endpoint, err)}
	}
	a := answer{st: st}
	if list {
		if a.list, err = cli.MemberList(ctx, clientv3.WithSerializable()); err != nil {
			return answer{err: fmt.Errorf("member list from %s: %w", endpoint, err)}
		}
	}
	return a
}

func statusOf(st *clientv3.StatusResponse) status {
	return status{leader: st.Leader, raftTerm: st.RaftTerm, dbSize: st.DbSize, dbSizeInUse: st.DbSizeInUse, dbSizeQuota: st.DbSizeQuota}
}

// parallel runs fn(0) to fn(n-1) at once and waits for all.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { fn(i) })
	}
	wg.Wait()
}

// quorum is the voting members a cluster of n needs to work.
func quorum(n int) int { return n/2 + 1 }

// tolerated is how many of n voting members can fail with quorum kept.
func tolerated(n int) int { return max(n-quorum(n), 0) }

func gradeMembers(f *facts) Result {
	n := len(f.etcd.voters())
	learners := len(f.etcd.members) - n
	ev := map[string]any{"voting": n, "learners": learners, "toleratedFailures": tolerated(n)}
	note := ""
	if learners > 0 {
		note = fmt.Sprintf(" (and %s, which do not vote)", plural(learners, "learner"))
	}
	switch {
	case n <= 1:
		return verdict(Fail, ev, "%s%s: no redundancy, losing it loses etcd", plural(n, "voting member"), note)
	case n%2 == 0:
		return verdict(Warn, ev, "%s%s tolerate %s, no more than %d do: an even count adds no fault tolerance, make it %d",
			plural(n, "voting member"), note, plural(tolerated(n), "failure"), n-1, n+1)
	}
	return verdict(Pass, ev, "%s%s tolerate %s", plural(n, "voting member"), note, plural(tolerated(n), "failure"))
}

// hostOf is the host a member runs on, from its first peer URL. Every
// loopback address is one host: members on 127.0.0.1 and 127.0.0.2 share
// a machine as surely as members on two ports of one address.
func hostOf(m member) string {
	if len(m.peerURLs) == 0 {
		return "member " + m.label() + " (no peer URL)"
	}
	u, err := url.Parse(m.peerURLs[0])
	if err != nil || u.Hostname() == "" {
		return m.peerURLs[0]
	}
	h := strings.ToLower(u.Hostname())
	if a, err := netip.ParseAddr(h); err == nil {
		if a.Unmap().IsLoopback() {
			return "loopback"
		}
		return a.Unmap().String()
	}
	if h == "localhost" {
		return "loopback"
	}
	return h
}

func gradeHosts(f *facts) Result {
	vs := f.etcd.voters()
	n := len(vs)
	perHost := map[string]int{}
	for _, m := range vs {
		perHost[hostOf(m)]++
	}
	hosts := make([]string, 0, len(perHost))
	for h := range perHost {
		hosts = append(hosts, h)
	}
	// Most loaded first: the host whose loss hurts most.
	slices.SortFunc(hosts, func(a, b string) int { return cmp.Or(perHost[b]-perHost[a], strings.Compare(a, b)) })
	// Lose hosts, most loaded first, while quorum holds.
	hostTol, left := 0, n
	for _, h := range hosts {
		if left-perHost[h] < quorum(n) {
			break
		}
		left -= perHost[h]
		hostTol++
	}
	ev := map[string]any{"members": n, "hosts": len(hosts), "membersPerHost": perHost, "toleratedHostFailures": hostTol}
	switch {
	case n == 0:
		return verdict(Fail, ev, "no voting member")
	case len(hosts) == 1:
		verb := "survive"
		if n == 1 {
			verb = "survives"
		}
		return verdict(Fail, ev, "%s on one host (%s) %s no host failure", plural(n, "member"), hosts[0], verb)
	case hostTol >= tolerated(n):
		return verdict(Pass, ev, "%s on %s tolerate %s, as many as the member count allows",
			plural(n, "member"), plural(len(hosts), "host"), plural(hostTol, "host failure"))
	case hostTol == 0:
		return verdict(Warn, ev, "%s on %s, %d of them on %s: losing that host loses quorum, so the spread survives no more than one host would",
			plural(n, "member"), plural(len(hosts), "host"), perHost[hosts[0]], hosts[0])
	}
	return verdict(Warn, ev, "%s on %s tolerate %s, fewer than the %s the member count allows (%d on %s)",
		plural(n, "member"), plural(len(hosts), "host"), plural(hostTol, "host failure"), plural(tolerated(n), "failure"), perHost[hosts[0]], hosts[0])
}

func gradeQuota(f *facts) Result {
	var worst member
	var ws status
	ratio := -1.0
	for _, m := range f.etcd.members {
		st, ok := f.etcd.status[m.id]
		if !ok {
			continue
		}
		q := st.dbSizeQuota
		if q <= 0 {
			q = etcdDefaultQuota
		}
		if r := float64(st.dbSize) / float64(q); r > ratio {
			worst, ws, ratio = m, st, r
		}
	}
	if ratio < 0 {
		return verdict(Fail, nil, "no member reported its database size")
	}
	quota, assumed := ws.dbSizeQuota, ws.dbSizeQuota <= 0
	note := ""
	if assumed {
		quota, note = etcdDefaultQuota, " (quota not reported: etcd's default assumed)"
	}
	pct := 100 * ratio
	ev := map[string]any{"member": worst.label(), "dbSize": ws.dbSize, "quota": quota, "quotaAssumed": assumed, "percent": round1(pct)}
	reason := fmt.Sprintf("fullest member %s: database %s of its %s quota (%.1f%%)%s", worst.label(), size(ws.dbSize), size(quota), pct, note)
	advice := ": etcd refuses writes at 100%; compact and defragment, or raise --quota-backend-bytes"
	switch {
	case pct > 80:
		return verdict(Fail, ev, "%s, over 80%%%s", reason, advice)
	case pct > 60:
		return verdict(Warn, ev, "%s, over 60%%%s", reason, advice)
	}
	return verdict(Pass, ev, "%s", reason)
}

func gradeFragmentation(f *facts) Result {
	var worst member
	var ws status
	most := int64(-1)
	for _, m := range f.etcd.members {
		st, ok := f.etcd.status[m.id]
		if !ok {
			continue
		}
		if free := max(st.dbSize-st.dbSizeInUse, 0); free > most {
			worst, ws, most = m, st, free
		}
	}
	if most < 0 {
		return verdict(Fail, nil, "no member reported its database size")
	}
	pct := 0.0
	if ws.dbSize > 0 {
		pct = 100 * float64(most) / float64(ws.dbSize)
	}
	ev := map[string]any{"member": worst.label(), "dbSize": ws.dbSize, "dbSizeInUse": ws.dbSizeInUse, "free": most, "percent": round1(pct)}
	reason := fmt.Sprintf("most free space on %s: %s of its %s database (%.1f%%)", worst.label(), size(most), size(ws.dbSize), pct)
	if 2*most > ws.dbSize && most > fragmentedBytes {
		return verdict(Warn, ev, "%s, over half and over %s: defragment it (etcdctl defrag, one member at a time) to give the space back", reason, size(fragmentedBytes))
	}
	return verdict(Pass, ev, "%s", reason)
}

func gradeLeader(f *facts) Result {
	e := f.etcd
	vs := e.voters()
	reachable := 0
	for _, m := range vs {
		if _, ok := e.status[m.id]; ok {
			reachable++
		}
	}
	// Who each answering member says leads, and the terms they are in.
	var leaders []uint64
	namedBy := map[uint64][]string{}
	var terms []uint64
	var down []string
	for _, m := range e.members {
		st, ok := e.status[m.id]
		if !ok {
			down = append(down, fmt.Sprintf("%s: %s", m.label(), e.unreachable[m.id]))
			continue
		}
		if _, seen := namedBy[st.leader]; !seen {
			leaders = append(leaders, st.leader)
		}
		namedBy[st.leader] = append(namedBy[st.leader], m.label())
		terms = append(terms, st.raftTerm)
	}
	slices.Sort(terms)
	terms = slices.Compact(terms)
	ev := map[string]any{"members": len(e.members), "reachable": len(e.members) - len(down), "unreachable": len(down)}
	if len(terms) > 0 {
		ev["raftTerm"] = terms[len(terms)-1]
	}
	if len(leaders) == 1 && leaders[0] != 0 {
		ev["leader"] = e.name(leaders[0])
	}
	switch {
	case reachable < quorum(len(vs)):
		return verdict(Fail, ev, "only %d of %s answer, fewer than the quorum of %d: %s",
			reachable, plural(len(vs), "voting member"), quorum(len(vs)), strings.Join(down, "; "))
	case len(leaders) > 1:
		var says []string
		for _, l := range leaders {
			who := "no leader"
			if l != 0 {
				who = e.name(l)
			}
			says = append(says, fmt.Sprintf("%s: %s", strings.Join(namedBy[l], ", "), who))
		}
		return verdict(Fail, ev, "members disagree on the leader (%s): a partition or an election under way", strings.Join(says, "; "))
	case len(leaders) == 0 || leaders[0] == 0:
		return verdict(Fail, ev, "no member knows a leader: an election under way, or quorum lost")
	case len(down) > 0:
		return verdict(Warn, ev, "%d of %s do not answer (%s); the others agree on leader %s in raft term %d",
			len(down), plural(len(e.members), "member"), strings.Join(down, "; "), e.name(leaders[0]), terms[len(terms)-1])
	case len(terms) > 1:
		return verdict(Warn, ev, "members agree on leader %s but are in raft terms %d to %d: an election may be under way",
			e.name(leaders[0]), terms[0], terms[len(terms)-1])
	}
	who := "all " + plural(len(e.members), "member") + " agree on"
	if len(e.members) == 1 {
		who = "its 1 member names"
	}
	return verdict(Pass, ev, "%s leader %s in raft term %d", who, e.name(leaders[0]), terms[0])
}
