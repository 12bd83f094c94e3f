package config

import (
	"time"

	"github.com/kdr-io/kdr/manifest"
)

// Config is the whole of kdr.yaml.
type Config struct {
	Clusters   []Cluster  `yaml:"clusters"`
	Encryption Encryption `yaml:"encryption"`
	Signing    Signing    `yaml:"signing"`
	Targets    []Target   `yaml:"targets"`
	Schedule   Schedule   `yaml:"schedule"`
	Retention  Retention  `yaml:"retention"`
	Agent      Agent      `yaml:"agent"`
	Drill      Drill      `yaml:"drill"`
}

// Drill configures the drills the agent runs on schedule.drill. A drill
// decrypts, so it needs an identity: the agent holds only recipients
// unless one is given here, best on a host outside the cluster, so that a
// stolen cluster does not reveal the backups.
type Drill struct {
	// IdentityFile decrypts the backups (an unprotected age identity).
	// Without it scheduled drills do not run, and the agent says so.
	IdentityFile string `yaml:"identityFile"`
	// Target is the target drilled from (default the first).
	Target string `yaml:"target"`
	// Sandbox is where the temporary restore is made (default the
	// system's temp directory).
	Sandbox string `yaml:"sandbox"`
	// KubeAPIServer is a kube-apiserver binary of the cluster's version;
	// when set, drills start it on the restored etcd and PKI and list the
	// namespaces.
	KubeAPIServer string `yaml:"kubeAPIServer"`
}

// Cluster is one etcd cluster and the off-etcd state that goes with it. A
// config may hold several (the main etcd, an events etcd, a CNI's etcd);
// each is backed up on its own.
type Cluster struct {
	Name string `yaml:"name"`
	Etcd Etcd   `yaml:"etcd"`
	// State is the off-etcd state captured with each snapshot. Left out
	// (nil), it is DefaultState(), a kubeadm node's; "state: []" captures
	// nothing.
	State     []FileSet `yaml:"state"`
	Inventory Inventory `yaml:"inventory"`
}

// Etcd says how to reach the cluster's members.
type Etcd struct {
	Endpoints []string `yaml:"endpoints"`
	// TLS holds client certificate paths. Plain http endpoints need
	// Insecure: true, said explicitly.
	TLS *TLS `yaml:"tls"`
	// Insecure allows http:// endpoints without TLS.
	Insecure bool `yaml:"insecure"`
	// Prefer picks the member to stream the snapshot from: follower
	// (default, keeps load off the leader), leader, or any.
	Prefer string `yaml:"prefer"`
	// DialTimeout bounds connecting to one member (default 5s).
	DialTimeout time.Duration `yaml:"dialTimeout"`
	// Username and Password for etcd auth, if enabled. Password comes from
	// the environment (${VAR}) or PasswordFile.
	Username     string `yaml:"username"`
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"passwordFile"`
}

// TLS is a set of PEM file paths.
type TLS struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ServerName overrides the name checked in the server certificate.
	ServerName string `yaml:"serverName"`
}

// FileSet is a named group of files captured beside the etcd snapshot.
type FileSet struct {
	Name string `yaml:"name"`
	// Paths are absolute paths or globs; ** matches any number of directories.
	Paths []string `yaml:"paths"`
	// Required makes a set that matches no file an error instead of a warning.
	Required bool `yaml:"required"`
}

// Inventory, Host, DNSRecord and Contact are the manifest's: the
// inventory is configured here and recorded in every manifest, and the
// format owns what it records.
type (
	Inventory = manifest.Inventory
	Host      = manifest.Host
	DNSRecord = manifest.DNSRecord
	Contact   = manifest.Contact
)

// Encryption lists the age recipients every backup is encrypted to. Only
// public keys: the identities stay offline with the operators.
type Encryption struct {
	// Recipients are age X25519 ("age1...") or SSH ("ssh-ed25519 ...",
	// "ssh-rsa ...") public keys.
	Recipients []string `yaml:"recipients"`
	// RecipientsFiles are files in age's recipients-file format.
	RecipientsFiles []string `yaml:"recipientsFiles"`
}

// Signing says whose sets kdr trusts. age encrypts to public keys, so it
// proves nothing about who wrote a set: every manifest, tombstone, drill
// report and runbook is signed with an Ed25519 key, and readers use only
// what verifies against TrustedKeys.
type Signing struct {
	// KeyFile is the private signing key of whoever writes sets (the
	// agent, from its own Secret; an operator running kdr backup or
	// prune), an unprotected OpenSSH Ed25519 key as `kdr keys generate
	// --signing` or `ssh-keygen -t ed25519` writes it. Readers need none.
	KeyFile string `yaml:"keyFile"`
	// TrustedKeys are the public keys ("ssh-ed25519 AAAA...") whose sets
	// are restored, listed, counted and pruned. Several, so a key can be
	// rotated: add the new one, then remove the old one.
	TrustedKeys []string `yaml:"trustedKeys"`
	// TrustedKeysFiles hold more trusted keys, one per line.
	TrustedKeysFiles []string `yaml:"trustedKeysFiles"`
}

// Target is one storage destination; exactly one of S3 and Local is set.
type Target struct {
	Name  string       `yaml:"name"`
	S3    *S3Target    `yaml:"s3"`
	Local *LocalTarget `yaml:"local"`
}

// S3Target is an S3-compatible bucket.
type S3Target struct {
	Endpoint string `yaml:"endpoint"`
	Region   string `yaml:"region"`
	Bucket   string `yaml:"bucket"`
	Prefix   string `yaml:"prefix"`
	// AccessKey and SecretKey usually reference the environment
	// ("${S3_SECRET_KEY}"); the ...File forms read them from files.
	AccessKey     string `yaml:"accessKey"`
	SecretKey     string `yaml:"secretKey"`
	AccessKeyFile string `yaml:"accessKeyFile"`
	SecretKeyFile string `yaml:"secretKeyFile"`
	// Insecure uses plain http.
	Insecure bool `yaml:"insecure"`
	// CA is a PEM bundle trusted for the endpoint's certificate.
	CA string `yaml:"ca"`
	// PathStyle forces path-style requests (most on-premise S3 needs it).
	PathStyle bool `yaml:"pathStyle"`
	// SSE is server-side encryption: "" (none), "AES256" or "aws:kms".
	SSE          string `yaml:"sse"`
	SSEKMSKeyID  string `yaml:"sseKmsKeyId"`
	StorageClass string `yaml:"storageClass"`
	// ObjectLock sets a retention period on every object when the bucket
	// has Object Lock enabled.
	ObjectLock *ObjectLock `yaml:"objectLock"`
	// PartSizeMiB of multipart uploads (default 8); an upload holds two parts in memory.
	PartSizeMiB int `yaml:"partSizeMiB"`
}

// ObjectLock is the retention applied to every stored object.
type ObjectLock struct {
	// Mode is GOVERNANCE or COMPLIANCE (default GOVERNANCE).
	Mode string `yaml:"mode"`
	// Days an object is protected after it is written.
	Days int `yaml:"days"`
}

// LocalTarget is a directory, typically on removable or network media.
type LocalTarget struct {
	Path string `yaml:"path"`
}

// Schedule holds cron expressions for the agent.
type Schedule struct {
	Backup string `yaml:"backup"`
	Prune  string `yaml:"prune"`
	Drill  string `yaml:"drill"`
	// Jitter delays each scheduled run by a random duration up to this.
	Jitter time.Duration `yaml:"jitter"`
}

// Retention says which complete backups prune keeps; a backup kept by any
// rule stays. All zero keeps everything.
type Retention struct {
	KeepLast    int `yaml:"keepLast"`
	KeepHourly  int `yaml:"keepHourly"`
	KeepDaily   int `yaml:"keepDaily"`
	KeepWeekly  int `yaml:"keepWeekly"`
	KeepMonthly int `yaml:"keepMonthly"`
	KeepYearly  int `yaml:"keepYearly"`
	// IncompleteGrace is how old an incomplete set must be before prune
	// removes it (default 24h), so a backup in progress is never touched.
	IncompleteGrace time.Duration `yaml:"incompleteGrace"`
	// KeepLog shortens the captured log: a set's log is removed once its
	// last revision was seen longer ago than this. Zero keeps the log as
	// long as the set it continues, which the rules above decide.
	KeepLog time.Duration `yaml:"keepLog"`
}

// Agent configures `kdr agent`.
type Agent struct {
	Listen string `yaml:"listen"`
	// CheckInterval is how often the agent pings its targets and counts
	// their backups, between scheduled runs (default 1m).
	CheckInterval time.Duration `yaml:"checkInterval"`
	// ShutdownGrace is how long a SIGTERM lets a running backup finish
	// before it is cancelled (default 25s, inside Kubernetes' 30s).
	ShutdownGrace  time.Duration  `yaml:"shutdownGrace"`
	LeaderElection LeaderElection `yaml:"leaderElection"`
	Capture        Capture        `yaml:"capture"`
}

// Capture is the agent's continuous capture of every etcd revision
// between full sets, which lets a restore go to any revision.
type Capture struct {
	// Enabled is on unless set to false.
	Enabled *bool `yaml:"enabled"`
	// SegmentPeriod closes a segment this long after its first revision
	// (default 10s): the most a crash of the agent loses.
	SegmentPeriod time.Duration `yaml:"segmentPeriod"`
	// SegmentMiB closes a segment once it holds this much (default 4).
	SegmentMiB int `yaml:"segmentMiB"`
	// HashEvery is how often a segment carries etcd's HashKV, which a
	// replay proves itself against; it scans the database (default 5m).
	HashEvery time.Duration `yaml:"hashEvery"`
	// PackEvery is how often the leader packs closed segments into one
	// object per chain and hour, so a target holds a few large objects
	// instead of thousands of small ones (default 1h).
	PackEvery time.Duration `yaml:"packEvery"`
	// RPO is the objective for the newest durable revision's age: alerts
	// and doctor compare the capture's lag with it (default 1m).
	RPO time.Duration `yaml:"rpo"`
	// Window is how far back from now a restore is promised to reach any
	// revision; alerts and doctor compare the log with it. Zero promises
	// no window.
	Window time.Duration `yaml:"window"`
}

// On reports whether the capture runs.
func (c Capture) On() bool { return c.Enabled == nil || *c.Enabled }

// LeaderElection uses a Kubernetes Lease so two replicas never back up at
// once. It takes effect in a pod (the in-cluster service account) or with
// a kubeconfig; elsewhere the agent runs alone.
type LeaderElection struct {
	Enabled   bool   `yaml:"enabled"`
	Namespace string `yaml:"namespace"`
	Name      string `yaml:"name"`
	// Kubeconfig reaches the API server from outside a pod.
	Kubeconfig string `yaml:"kubeconfig"`
	// LeaseDuration is how long a dead leader keeps the lease (default
	// 15s); RenewDeadline how long the leader tries to renew before it
	// gives up (10s); RetryPeriod how often everyone tries (2s).
	LeaseDuration time.Duration `yaml:"leaseDuration"`
	RenewDeadline time.Duration `yaml:"renewDeadline"`
	RetryPeriod   time.Duration `yaml:"retryPeriod"`
}
