package agent

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/config"
)

// Failure reasons, the values of the reason label.
const (
	reasonEtcd     = "etcd"
	reasonState    = "state"
	reasonTarget   = "target"
	reasonConfig   = "config"
	reasonCanceled = "canceled"
	reasonRunbook  = "runbook"
	// reasonKit counts backups that completed but could not refresh the
	// offline recovery kit of a local target.
	reasonKit   = "kit"
	reasonOther = "other"
	// reasonLost counts segments another writer stored first.
	reasonLost = "lost"
)

// Pack results, the values of the result label of kdr_log_pack_runs_total.
const (
	packOK     = "ok"
	packFailed = "failed"
)

// metrics are the agent's series. Labels name clusters, targets, jobs and
// certificate paths from the config and the manifest: never a secret.
type metrics struct {
	reg *prometheus.Registry

	lastSuccess *prometheus.GaugeVec     // cluster, target
	duration    *prometheus.HistogramVec // cluster
	written     *prometheus.CounterVec   // cluster, target
	failures    *prometheus.CounterVec   // cluster, target, reason
	dbSize      *prometheus.GaugeVec     // cluster
	revision    *prometheus.GaugeVec     // cluster
	backups     *prometheus.GaugeVec     // cluster, target
	oldest      *prometheus.GaugeVec     // cluster, target
	newest      *prometheus.GaugeVec     // cluster, target
	certExpiry  *prometheus.GaugeVec     // cluster, path
	targetUp    *prometheus.GaugeVec     // target
	pruned      *prometheus.CounterVec   // cluster, target

	drillLast     *prometheus.GaugeVec   // cluster
	drillRTO      *prometheus.GaugeVec   // cluster
	drillRPO      *prometheus.GaugeVec   // cluster
	drillReplay   *prometheus.GaugeVec   // cluster
	drillFailures *prometheus.CounterVec // cluster

	segments            *prometheus.CounterVec // cluster, target
	segmentBytes        *prometheus.CounterVec // cluster, target
	captureFailures     *prometheus.CounterVec // cluster, target, reason
	fullSetRequests     *prometheus.CounterVec // cluster
	captureDurable      *prometheus.GaugeVec   // cluster
	captureLag          *prometheus.GaugeVec   // cluster, target
	captureLagRevisions *prometheus.GaugeVec   // cluster, target
	packRuns            *prometheus.CounterVec // cluster, target, result
	packedSegments      *prometheus.CounterVec // cluster, target

	// The window, per cluster and target (catalog.Window), and the
	// objectives alerts hold it to, per cluster.
	windowStart           *prometheus.GaugeVec // cluster, target
	windowEnd             *prometheus.GaugeVec // cluster, target
	windowStartRevision   *prometheus.GaugeVec // cluster, target
	windowEndRevision     *prometheus.GaugeVec // cluster, target
	windowContiguousStart *prometheus.GaugeVec // cluster, target
	windowGaps            *prometheus.GaugeVec // cluster, target
	logStart              *prometheus.GaugeVec // cluster, target
	rpoObjective          *prometheus.GaugeVec // cluster
	windowObjective       *prometheus.GaugeVec // cluster

	jobRuns    *prometheus.CounterVec // job, result
	jobSkipped *prometheus.CounterVec // job
	nextRun    *prometheus.GaugeVec   // job
	catchUps   prometheus.Counter
	leader     prometheus.Gauge
	reloadOK   prometheus.Gauge
}

func newMetrics() *metrics {
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "kdr", Name: name, Help: help}, labels)
	}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "kdr", Name: name, Help: help}, labels)
	}
	m := &metrics{
		reg:         prometheus.NewRegistry(),
		lastSuccess: gauge("backup_last_success_timestamp_seconds", "When the newest complete backup on the target was taken.", "cluster", "target"),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "kdr", Name: "backup_duration_seconds", Help: "How long backups took, complete or not.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 13), // 1s to about 68 minutes
		}, []string{"cluster"}),
		written:    counter("backup_bytes_written_total", "Bytes of complete sets stored (compressed and encrypted).", "cluster", "target"),
		failures:   counter("backup_failures_total", "Backups that did not complete, by target (empty when none was reached) and reason.", "cluster", "target", "reason"),
		dbSize:     gauge("etcd_db_size_bytes", "etcd database size at the newest backup.", "cluster"),
		revision:   gauge("etcd_revision", "etcd revision at the newest backup.", "cluster"),
		backups:    gauge("backups", "Complete backup sets on the target.", "cluster", "target"),
		oldest:     gauge("backup_oldest_timestamp_seconds", "When the oldest complete backup on the target was taken.", "cluster", "target"),
		newest:     gauge("backup_newest_timestamp_seconds", "When the newest complete backup on the target was taken.", "cluster", "target"),
		certExpiry: gauge("certificate_expiry_timestamp_seconds", "When each certificate captured by the newest backup expires.", "cluster", "path"),
		targetUp:   gauge("target_up", "1 when the target answered the last check and took the last backup, else 0.", "target"),
		pruned:     counter("prune_deleted_total", "Backup sets prune removed, complete or left over.", "cluster", "target"),

		drillLast:     gauge("drill_last_success_timestamp_seconds", "When the last successful drill ran; 0 when none has.", "cluster"),
		drillRTO:      gauge("drill_rto_seconds", "Recovery time measured by the last successful drill.", "cluster"),
		drillRPO:      gauge("drill_rpo_seconds", "Age of the backup the last successful drill restored.", "cluster"),
		drillReplay:   gauge("drill_replay_seconds", "How long the replay of the captured log took in the newest successful drill to a revision.", "cluster"),
		drillFailures: counter("drill_failures_total", "Drills that failed.", "cluster"),

		segments:            counter("log_segments_total", "Segments of the captured log stored on the target.", "cluster", "target"),
		segmentBytes:        counter("log_bytes_written_total", "Bytes of the captured log stored on the target.", "cluster", "target"),
		captureFailures:     counter("log_failures_total", "Segments a target did not store, or capture runs that stopped (empty target), by reason.", "cluster", "target", "reason"),
		fullSetRequests:     counter("log_full_set_requests_total", "Full backups the capture asked for because the log could not go on.", "cluster"),
		captureDurable:      gauge("log_durable_revision", "Last etcd revision the captured log holds on every target it writes.", "cluster"),
		captureLag:          gauge("log_lag_seconds", "How long the oldest captured revision not yet stored on the target has waited; 0 when none waits. Exported by the replica that captures.", "cluster", "target"),
		captureLagRevisions: gauge("log_lag_revisions", "Revisions received from etcd and not yet stored on the target.", "cluster", "target"),
		packRuns:            counter("log_pack_runs_total", "Runs that packed closed segments of the captured log into larger objects, by result (ok or failed).", "cluster", "target", "result"),
		packedSegments:      counter("log_packed_segments_total", "Segments of the captured log packed into larger objects.", "cluster", "target"),

		windowStart:           gauge("log_window_start_timestamp_seconds", "When the oldest revision a restore from the target reaches was seen: its oldest set's creation.", "cluster", "target"),
		windowEnd:             gauge("log_window_end_timestamp_seconds", "When the newest revision a restore from the target reaches was seen.", "cluster", "target"),
		windowStartRevision:   gauge("log_window_start_revision", "The oldest revision a restore from the target reaches.", "cluster", "target"),
		windowEndRevision:     gauge("log_window_end_revision", "The newest revision a restore from the target reaches.", "cluster", "target"),
		windowContiguousStart: gauge("log_window_contiguous_start_timestamp_seconds", "When the first revision of the newest stretch without a gap, which ends at the window's end, was seen.", "cluster", "target"),
		windowGaps:            gauge("log_window_gaps", "Gaps in the window the log should hold and does not (not counting sets older than the log, which restore at their own revision alone).", "cluster", "target"),
		logStart:              gauge("log_start_timestamp_seconds", "When the oldest revision a segment on the target holds was seen: since when the log has run there.", "cluster", "target"),
		rpoObjective:          gauge("log_rpo_objective_seconds", "agent.capture.rpo: how old the newest durable revision may be; 0 when the capture is off.", "cluster"),
		windowObjective:       gauge("log_window_objective_seconds", "agent.capture.window: how far back every revision is promised to restore; 0 when nothing is promised.", "cluster"),

		jobRuns:    counter("job_runs_total", "Scheduled runs that finished, by job and result.", "job", "result"),
		jobSkipped: counter("job_skipped_total", "Scheduled runs skipped because the previous run of the job was still going.", "job"),
		nextRun:    gauge("job_next_run_timestamp_seconds", "When the job runs next.", "job"),
		catchUps: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "kdr", Name: "backup_catchup_runs_total",
			Help: "Backups a new leader started because one fell due while no replica led."}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "kdr", Name: "leader",
			Help: "1 on the replica that holds the lease, or runs alone; 0 on a standby."}),
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "kdr", Name: "config_last_reload_successful",
			Help: "1 when the config in use is the file's (the last load or reload worked), 0 when a reload was refused."}),
	}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.reg.MustRegister(m.own()...)
	return m
}

// own lists the kdr_ collectors.
func (m *metrics) own() []prometheus.Collector {
	cs := []prometheus.Collector{m.lastSuccess, m.duration, m.written, m.failures, m.dbSize, m.revision, m.backups,
		m.oldest, m.newest, m.certExpiry, m.targetUp, m.pruned, m.drillLast, m.drillRTO, m.drillRPO, m.drillFailures,
		m.jobRuns, m.jobSkipped, m.nextRun, m.catchUps, m.leader, m.reloadOK,
		m.segments, m.segmentBytes, m.captureFailures, m.fullSetRequests, m.captureDurable, m.captureLag, m.captureLagRevisions,
		m.drillReplay, m.packRuns, m.packedSegments, m.rpoObjective, m.windowObjective}
	for _, v := range m.windowVecs() {
		cs = append(cs, v)
	}
	return cs
}

// zero creates the series of cfg's clusters and targets at 0, so the first
// failure is an increase a rule sees, and a cluster never drilled reads
// as such.
func (m *metrics) zero(cfg *config.Config) {
	targets := []string{""}
	for _, t := range cfg.Targets {
		targets = append(targets, t.Name)
	}
	for _, c := range cfg.Clusters {
		for _, t := range targets {
			for _, r := range []string{reasonEtcd, reasonState, reasonTarget, reasonConfig, reasonCanceled, reasonRunbook, reasonKit, reasonOther} {
				m.failures.WithLabelValues(c.Name, t, r)
			}
			if t != "" {
				m.written.WithLabelValues(c.Name, t)
				m.pruned.WithLabelValues(c.Name, t)
				// Never backed up reads as the epoch, so the age alert fires
				// for a target no backup ever reached.
				m.lastSuccess.WithLabelValues(c.Name, t)
				m.backups.WithLabelValues(c.Name, t)
			}
		}
		m.drillFailures.WithLabelValues(c.Name)
		m.drillLast.WithLabelValues(c.Name)
		m.fullSetRequests.WithLabelValues(c.Name)
		for _, t := range targets[1:] {
			m.segments.WithLabelValues(c.Name, t)
			m.segmentBytes.WithLabelValues(c.Name, t)
			for _, r := range []string{reasonTarget, reasonLost} {
				m.captureFailures.WithLabelValues(c.Name, t, r)
			}
			m.packedSegments.WithLabelValues(c.Name, t)
			for _, r := range []string{packOK, packFailed} {
				m.packRuns.WithLabelValues(c.Name, t, r)
			}
		}
		// No capture, no promise: the log's alerts compare with these.
		rpo, window := 0.0, 0.0
		if cc := cfg.Agent.Capture; cc.On() {
			rpo, window = cc.RPO.Seconds(), cc.Window.Seconds()
		}
		m.rpoObjective.WithLabelValues(c.Name).Set(rpo)
		m.windowObjective.WithLabelValues(c.Name).Set(window)
	}
	for _, t := range cfg.Targets {
		m.targetUp.WithLabelValues(t.Name)
	}
	for _, j := range []string{"backup", "prune", "drill"} {
		m.jobSkipped.WithLabelValues(j)
		for _, r := range []string{"success", "failure"} {
			m.jobRuns.WithLabelValues(j, r)
		}
	}
}

// forget drops the series of the clusters and targets a reload removed,
// which would otherwise go on alerting with their last values.
func (m *metrics) forget(old, cfg *config.Config) {
	for _, c := range old.Clusters {
		if !slices.ContainsFunc(cfg.Clusters, func(n config.Cluster) bool { return n.Name == c.Name }) {
			for _, v := range m.vecs() {
				v.DeletePartialMatch(prometheus.Labels{"cluster": c.Name})
			}
		}
	}
	for _, t := range old.Targets {
		if !slices.ContainsFunc(cfg.Targets, func(n config.Target) bool { return n.Name == t.Name }) {
			for _, v := range m.vecs() {
				v.DeletePartialMatch(prometheus.Labels{"target": t.Name})
			}
		}
	}
}

// partialDeleter is what every metric vector offers to drop series.
type partialDeleter interface {
	DeletePartialMatch(prometheus.Labels) int
}

func (m *metrics) vecs() []partialDeleter {
	vs := []partialDeleter{m.lastSuccess, m.duration, m.written, m.failures, m.dbSize, m.revision, m.backups,
		m.oldest, m.newest, m.certExpiry, m.targetUp, m.pruned, m.drillLast, m.drillRTO, m.drillRPO, m.drillFailures,
		m.segments, m.segmentBytes, m.captureFailures, m.fullSetRequests, m.captureDurable, m.captureLag, m.captureLagRevisions,
		m.drillReplay, m.packRuns, m.packedSegments, m.rpoObjective, m.windowObjective}
	for _, v := range m.windowVecs() {
		vs = append(vs, v)
	}
	return vs
}

// windowVecs are the series of the window of a cluster on a target.
func (m *metrics) windowVecs() []*prometheus.GaugeVec {
	return []*prometheus.GaugeVec{m.windowStart, m.windowEnd, m.windowStartRevision, m.windowEndRevision,
		m.windowContiguousStart, m.windowGaps, m.logStart}
}

// recordWindow exports what a restore from a target reaches of a cluster.
func (m *metrics) recordWindow(w *catalog.Window) {
	c, t := w.Cluster, w.Target
	m.windowStart.WithLabelValues(c, t).Set(float64(w.From.Time.Unix()))
	m.windowEnd.WithLabelValues(c, t).Set(float64(w.To.Time.Unix()))
	m.windowStartRevision.WithLabelValues(c, t).Set(float64(w.From.Revision))
	m.windowEndRevision.WithLabelValues(c, t).Set(float64(w.To.Revision))
	m.windowContiguousStart.WithLabelValues(c, t).Set(float64(w.Contiguous.Time.Unix()))
	m.windowGaps.WithLabelValues(c, t).Set(float64(w.Lost()))
	if w.LogFrom != nil {
		m.logStart.WithLabelValues(c, t).Set(float64(w.LogFrom.Time.Unix()))
	} else {
		m.logStart.DeleteLabelValues(c, t)
	}
}

// forgetWindow drops the window of a cluster on a target that holds no
// trusted set of it any more.
func (m *metrics) forgetWindow(cluster, target string) {
	for _, v := range m.windowVecs() {
		v.DeleteLabelValues(cluster, target)
	}
}

// packRun counts a run that packed closed segments of a cluster's log on
// a target: packed segments when it worked, a failure when err is set.
func (m *metrics) packRun(cluster, target string, packed int, err error) {
	if err != nil {
		m.packRuns.WithLabelValues(cluster, target, packFailed).Inc()
		return
	}
	m.packRuns.WithLabelValues(cluster, target, packOK).Inc()
	m.packedSegments.WithLabelValues(cluster, target).Add(float64(packed))
}
