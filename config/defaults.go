package config

import "time"

// Defaults of the values a config may leave out.
const (
	DefaultPrefer          = "follower"
	DefaultDialTimeout     = 5 * time.Second
	DefaultPartSizeMiB     = 8
	DefaultRegion          = "us-east-1"
	DefaultObjectLockMode  = "GOVERNANCE"
	DefaultIncompleteGrace = 24 * time.Hour
	DefaultListen          = ":9090"
	DefaultCheckInterval   = time.Minute
	DefaultShutdownGrace   = 25 * time.Second
	DefaultLeaseDuration   = 15 * time.Second
	DefaultRenewDeadline   = 10 * time.Second
	DefaultRetryPeriod     = 2 * time.Second
	DefaultBackupSchedule  = "*/30 * * * *"
	DefaultPruneSchedule   = "0 3 * * *"
	// DefaultDrillSchedule is 04:00 on the first of every third month.
	DefaultDrillSchedule  = "0 4 1 */3 *"
	DefaultLeaseNamespace = "kdr-system"
	DefaultLeaseName      = "kdr"
	DefaultSegmentPeriod  = 10 * time.Second
	DefaultSegmentMiB     = 4
	DefaultHashEvery      = 5 * time.Minute
	DefaultPackEvery      = time.Hour
	DefaultRPO            = time.Minute
)

// DefaultState is the off-etcd state of a kubeadm control-plane node, used
// for a cluster whose config has no state key at all (an explicit
// "state: []" captures nothing). Only the PKI is required: without its CAs
// and service-account keys a cluster cannot be rebuilt, while the other
// sets are absent on many hosts. Each call returns a new slice.
func DefaultState() []FileSet {
	return []FileSet{
		{Name: "pki", Paths: []string{"/etc/kubernetes/pki/**"}, Required: true},
		{Name: "kubeconfigs", Paths: []string{"/etc/kubernetes/*.conf"}},
		{Name: "manifests", Paths: []string{"/etc/kubernetes/manifests/*"}},
		{Name: "loadbalancer", Paths: []string{"/etc/haproxy/haproxy.cfg", "/etc/keepalived/keepalived.conf"}},
		// CoreDNS run outside the cluster, BIND on Debian and on Red Hat.
		{Name: "dns", Paths: []string{"/etc/coredns/**", "/etc/bind/**", "/etc/named.conf", "/var/named/*"}},
	}
}

// ApplyDefaults fills in what a config left out, as Parse does; for a
// Config built in code.
func (c *Config) ApplyDefaults() { applyDefaults(c) }

func applyDefaults(cfg *Config) {
	for i := range cfg.Clusters {
		c := &cfg.Clusters[i]
		if c.Etcd.Prefer == "" {
			c.Etcd.Prefer = DefaultPrefer
		}
		if c.Etcd.DialTimeout == 0 {
			c.Etcd.DialTimeout = DefaultDialTimeout
		}
		if c.State == nil {
			c.State = DefaultState()
		}
	}
	for i := range cfg.Targets {
		s := cfg.Targets[i].S3
		if s == nil {
			continue
		}
		if s.PartSizeMiB == 0 {
			s.PartSizeMiB = DefaultPartSizeMiB
		}
		if s.Region == "" {
			s.Region = DefaultRegion
		}
		if s.ObjectLock != nil && s.ObjectLock.Mode == "" {
			s.ObjectLock.Mode = DefaultObjectLockMode
		}
	}
	sch := &cfg.Schedule
	if sch.Backup == "" {
		sch.Backup = DefaultBackupSchedule
	}
	if sch.Prune == "" {
		sch.Prune = DefaultPruneSchedule
	}
	if sch.Drill == "" {
		sch.Drill = DefaultDrillSchedule
	}
	if cfg.Retention.IncompleteGrace == 0 {
		cfg.Retention.IncompleteGrace = DefaultIncompleteGrace
	}
	if cfg.Agent.Listen == "" {
		cfg.Agent.Listen = DefaultListen
	}
	if cfg.Agent.CheckInterval == 0 {
		cfg.Agent.CheckInterval = DefaultCheckInterval
	}
	if cfg.Agent.ShutdownGrace == 0 {
		cfg.Agent.ShutdownGrace = DefaultShutdownGrace
	}
	cp := &cfg.Agent.Capture
	if cp.SegmentPeriod == 0 {
		cp.SegmentPeriod = DefaultSegmentPeriod
	}
	if cp.SegmentMiB == 0 {
		cp.SegmentMiB = DefaultSegmentMiB
	}
	if cp.HashEvery == 0 {
		cp.HashEvery = DefaultHashEvery
	}
	if cp.PackEvery == 0 {
		cp.PackEvery = DefaultPackEvery
	}
	if cp.RPO == 0 {
		cp.RPO = DefaultRPO
	}
	le := &cfg.Agent.LeaderElection
	if le.Namespace == "" {
		le.Namespace = DefaultLeaseNamespace
	}
	if le.Name == "" {
		le.Name = DefaultLeaseName
	}
	if le.LeaseDuration == 0 {
		le.LeaseDuration = DefaultLeaseDuration
	}
	if le.RenewDeadline == 0 {
		le.RenewDeadline = DefaultRenewDeadline
	}
	if le.RetryPeriod == 0 {
		le.RetryPeriod = DefaultRetryPeriod
	}
}
