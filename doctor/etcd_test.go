package doctor

import (
	"fmt"
	"strings"
	"testing"
)

const mib = 1 << 20

// etcdOf makes the facts of a healthy cluster with one voting member per
// peer URL, named m1, m2, ..., each answering that m1 leads in term 2.
func etcdOf(peers ...string) etcdFacts {
	e := etcdFacts{status: map[uint64]status{}, unreachable: map[uint64]string{}}
	for i, p := range peers {
		id := uint64(i + 1)
		e.members = append(e.members, member{id: id, name: fmt.Sprintf("m%d", id), peerURLs: []string{p}})
		e.status[id] = status{leader: 1, raftTerm: 2, dbSize: 10 * mib, dbSizeInUse: 8 * mib, dbSizeQuota: 2 << 30}
	}
	return e
}

// loopback makes the facts of n members on 127.0.0.1, one port each.
func loopback(n int) etcdFacts {
	var peers []string
	for i := range n {
		peers = append(peers, fmt.Sprintf("http://127.0.0.1:%d", 2380+i))
	}
	return etcdOf(peers...)
}

// with changes the facts and returns them.
func with(e etcdFacts, change func(*etcdFacts)) etcdFacts {
	change(&e)
	return e
}

func learner(id uint64) func(*etcdFacts) {
	return func(e *etcdFacts) { e.members[id-1].learner = true }
}

func down(ids ...uint64) func(*etcdFacts) {
	return func(e *etcdFacts) {
		for _, id := range ids {
			delete(e.status, id)
			e.unreachable[id] = "status of http://x: context deadline exceeded"
		}
	}
}

func setStatus(id uint64, change func(*status)) func(*etcdFacts) {
	return func(e *etcdFacts) {
		st := e.status[id]
		change(&st)
		e.status[id] = st
	}
}

// gradeCase is one grading of facts: the grade and words the reason must hold.
type gradeCase struct {
	name  string
	facts facts
	grade Grade
	words []string
}

func runGradeCases(t *testing.T, fn func(*facts) Result, cases []gradeCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := fn(&tc.facts)
			if r.Grade != tc.grade {
				t.Errorf("grade %s, want %s: %s", r.Grade, tc.grade, r.Reason)
			}
			for _, w := range tc.words {
				if !strings.Contains(r.Reason, w) {
					t.Errorf("reason does not say %q: %s", w, r.Reason)
				}
			}
			if strings.Contains(r.Reason, "\n") {
				t.Errorf("reason is not one line: %q", r.Reason)
			}
		})
	}
}

func TestGradeMembers(t *testing.T) {
	runGradeCases(t, gradeMembers, []gradeCase{
		{"one", facts{etcd: loopback(1)}, Fail, []string{"1 voting member", "no redundancy"}},
		{"two", facts{etcd: loopback(2)}, Warn, []string{"2 voting members tolerate 0 failures", "even count", "make it 3"}},
		{"three", facts{etcd: loopback(3)}, Pass, []string{"3 voting members tolerate 1 failure"}},
		{"four", facts{etcd: loopback(4)}, Warn, []string{"tolerate 1 failure, no more than 3 do"}},
		{"five", facts{etcd: loopback(5)}, Pass, []string{"5 voting members tolerate 2 failures"}},
		{"three and a learner", facts{etcd: with(loopback(4), learner(4))}, Pass, []string{"3 voting members (and 1 learner, which do not vote) tolerate 1 failure"}},
		{"one voter, two learners", facts{etcd: with(loopback(3), func(e *etcdFacts) { learner(2)(e); learner(3)(e) })}, Fail, []string{"1 voting member", "2 learners"}},
	})
}

func TestGradeHosts(t *testing.T) {
	runGradeCases(t, gradeHosts, []gradeCase{
		{"one member", facts{etcd: etcdOf("https://10.0.0.11:2380")}, Fail, []string{"1 member on one host (10.0.0.11) survives no host failure"}},
		{"three on loopback ports", facts{etcd: loopback(3)}, Fail, []string{"3 members on one host (loopback) survive no host failure"}},
		{"every loopback address is one host", facts{etcd: etcdOf("http://127.0.0.1:2380", "http://127.0.0.2:2380", "http://[::1]:2380", "http://localhost:2381")}, Fail, []string{"4 members on one host (loopback)"}},
		{"host names ignore case", facts{etcd: etcdOf("https://CP1.example:2380", "https://cp1.example:2381", "https://cp1.example:2382")}, Fail, []string{"on one host (cp1.example)"}},
		{"two plus one", facts{etcd: etcdOf("https://10.0.0.11:2380", "https://10.0.0.11:2381", "https://10.0.0.12:2380")}, Warn, []string{"3 members on 2 hosts, 2 of them on 10.0.0.11: losing that host loses quorum"}},
		{"three hosts", facts{etcd: etcdOf("https://10.0.0.11:2380", "https://10.0.0.12:2380", "https://10.0.0.13:2380")}, Pass, []string{"3 members on 3 hosts tolerate 1 host failure"}},
		{"two on two hosts", facts{etcd: etcdOf("https://10.0.0.11:2380", "https://10.0.0.12:2380")}, Pass, []string{"2 members on 2 hosts"}},
		{"five on three hosts, two two one", facts{etcd: etcdOf("https://a:2380", "https://a:2381", "https://b:2380", "https://b:2381", "https://c:2380")}, Warn, []string{"5 members on 3 hosts tolerate 1 host failure, fewer than the 2 failures"}},
		{"five on five hosts", facts{etcd: etcdOf("https://a:2380", "https://b:2380", "https://c:2380", "https://d:2380", "https://e:2380")}, Pass, []string{"tolerate 2 host failures"}},
		{"a learner elsewhere spreads nothing", facts{etcd: with(etcdOf("http://127.0.0.1:2380", "http://127.0.0.1:2381", "http://127.0.0.1:2382", "https://10.0.0.14:2380"), learner(4))}, Fail, []string{"3 members on one host (loopback)"}},
	})
}

func TestGradeQuota(t *testing.T) {
	size := func(id uint64, db, quota int64) func(*etcdFacts) {
		return setStatus(id, func(s *status) { s.dbSize, s.dbSizeQuota = db, quota })
	}
	runGradeCases(t, gradeQuota, []gradeCase{
		{"small", facts{etcd: loopback(3)}, Pass, []string{"10.0 MiB of its 2.0 GiB quota (0.5%)"}},
		{"60 percent passes", facts{etcd: with(loopback(1), size(1, 600*mib, 1000*mib))}, Pass, []string{"(60.0%)"}},
		{"over 60 percent warns", facts{etcd: with(loopback(1), size(1, 610*mib, 1000*mib))}, Warn, []string{"(61.0%), over 60%", "--quota-backend-bytes"}},
		{"80 percent warns", facts{etcd: with(loopback(1), size(1, 800*mib, 1000*mib))}, Warn, []string{"(80.0%)"}},
		{"over 80 percent fails", facts{etcd: with(loopback(1), size(1, 810*mib, 1000*mib))}, Fail, []string{"(81.0%), over 80%", "refuses writes"}},
		{"the fullest member counts", facts{etcd: with(loopback(3), size(2, 900*mib, 1000*mib))}, Fail, []string{"fullest member m2"}},
		{"an unreported quota is etcd's default", facts{etcd: with(loopback(1), size(1, 1700*mib, 0))}, Fail, []string{"1.7 GiB of its 2.0 GiB quota", "etcd's default assumed"}},
		{"an unreachable member is not graded", facts{etcd: with(with(loopback(3), size(3, 900*mib, 1000*mib)), down(3))}, Pass, []string{"(0.5%)"}},
	})
}

func TestGradeFragmentation(t *testing.T) {
	use := func(db, inUse int64) func(*etcdFacts) {
		return setStatus(1, func(s *status) { s.dbSize, s.dbSizeInUse = db, inUse })
	}
	runGradeCases(t, gradeFragmentation, []gradeCase{
		{"compact", facts{etcd: loopback(3)}, Pass, []string{"2.0 MiB of its 10.0 MiB database (20.0%)"}},
		{"half free, much", facts{etcd: with(loopback(3), use(600*mib, 200*mib))}, Warn, []string{"m1: 400.0 MiB of its 600.0 MiB database (66.7%)", "etcdctl defrag"}},
		{"mostly free, little", facts{etcd: with(loopback(1), use(150*mib, 50*mib))}, Pass, []string{"100.0 MiB"}},
		{"much free, under half", facts{etcd: with(loopback(1), use(1000*mib, 600*mib))}, Pass, []string{"(40.0%)"}},
	})
}

func TestGradeLeader(t *testing.T) {
	runGradeCases(t, gradeLeader, []gradeCase{
		{"agreed", facts{etcd: loopback(3)}, Pass, []string{"all 3 members agree on leader m1 in raft term 2"}},
		{"one of three down", facts{etcd: with(loopback(3), down(3))}, Warn, []string{"1 of 3 members do not answer (m3: status of", "agree on leader m1"}},
		{"two of three down", facts{etcd: with(loopback(3), down(2, 3))}, Fail, []string{"only 1 of 3 voting members answer, fewer than the quorum of 2", "m2: ", "m3: "}},
		{"one of two down loses quorum", facts{etcd: with(loopback(2), down(2))}, Fail, []string{"only 1 of 2 voting members answer"}},
		{"a down learner warns", facts{etcd: with(with(loopback(4), learner(4)), down(4))}, Warn, []string{"1 of 4 members do not answer"}},
		{"two leaders", facts{etcd: with(loopback(3), setStatus(3, func(s *status) { s.leader = 3 }))}, Fail, []string{"disagree on the leader (m1, m2: m1; m3: m3)"}},
		{"no leader", facts{etcd: with(loopback(1), setStatus(1, func(s *status) { s.leader = 0 }))}, Fail, []string{"no member knows a leader"}},
		{"terms differ", facts{etcd: with(loopback(3), setStatus(2, func(s *status) { s.raftTerm = 9 }))}, Warn, []string{"raft terms 2 to 9"}},
	})
}
