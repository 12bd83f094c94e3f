package agent

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kdr-io/kdr/capture"
)

func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.m.reg, promhttp.HandlerOpts{ErrorLog: slogPrinter{a}}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if why := a.unready(); len(why) > 0 {
			http.Error(w, "not ready: "+strings.Join(why, "; "), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(a.status())
	})
	return mux
}

// Status is the read-only summary /status serves.
type Status struct {
	Identity     string    `json:"identity"`
	Leader       bool      `json:"leader"`
	LeaderID     string    `json:"leaderIdentity,omitempty"`
	Election     bool      `json:"leaderElection"`
	Ready        bool      `json:"ready"`
	NotReady     []string  `json:"notReady,omitempty"`
	ConfigLoaded time.Time `json:"configLoaded"`
	// Backups is cluster -> target -> the complete sets there and the
	// window they and their logs make (catalog.Window), refreshed every
	// agent.checkInterval.
	Backups map[string]map[string]setsView `json:"backups"`
	Jobs    map[string]JobStatus           `json:"jobs"`
	// Log is cluster -> what its capture of the log has done, on the leader.
	Log map[string]capture.Status `json:"log,omitempty"`
}

// JobStatus is one scheduled job's state.
type JobStatus struct {
	Schedule string    `json:"schedule"`
	Next     time.Time `json:"next,omitzero"`
	Running  bool      `json:"running"`
	Skipped  int       `json:"skipped"`
	Last     runRecord `json:"last"`
}

func (a *Agent) status() Status {
	why := a.unready()
	st := Status{
		Identity: a.o.Identity, Leader: a.leader.Load(), LeaderID: a.leaderID.Load().(string), Election: a.election.Load(),
		Ready: len(why) == 0, NotReady: why, Jobs: map[string]JobStatus{},
	}
	a.mu.Lock()
	st.ConfigLoaded = a.loaded
	specs := schedules(a.cfg)
	for name, j := range a.jobs {
		js := JobStatus{Schedule: specs[name], Running: j.running.Load(), Skipped: j.skipped, Last: j.last}
		if a.sched != nil {
			if e := a.sched.Entry(j.entry); e.Valid() {
				js.Next = e.Next
			}
		}
		st.Jobs[name] = js
	}
	a.mu.Unlock()
	a.health.mu.Lock()
	st.Backups = a.health.sets
	a.health.mu.Unlock()
	st.Log = a.captureStatus()
	return st
}

// slogPrinter passes promhttp's errors to the agent's log.
type slogPrinter struct{ a *Agent }

func (p slogPrinter) Println(v ...any) {
	p.a.log.Error("serving metrics", "err", fmt.Sprint(v...))
}
