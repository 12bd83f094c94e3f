package fromconfig

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/internal/version"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/restore"
	"github.com/kdr-io/kdr/snapshot"
	"github.com/kdr-io/kdr/storage"
)

// Clusters returns the named cluster, or all when name is empty.
func Clusters(cfg *config.Config, name string) ([]config.Cluster, error) {
	if name == "" {
		return cfg.Clusters, nil
	}
	for _, c := range cfg.Clusters {
		if c.Name == name {
			return []config.Cluster{c}, nil
		}
	}
	return nil, fmt.Errorf("no cluster %q in the config", name)
}

// Targets builds the configured targets, or only the named one.
func Targets(ctx context.Context, cfg *config.Config, only string) ([]storage.Target, error) {
	var out []storage.Target
	for _, t := range cfg.Targets {
		if only != "" && t.Name != only {
			continue
		}
		target, err := Target(ctx, t)
		if err != nil {
			return nil, err
		}
		out = append(out, target)
	}
	if len(out) == 0 {
		if only != "" {
			return nil, fmt.Errorf("no target %q in the config", only)
		}
		return nil, errors.New("no targets in the config")
	}
	return out, nil
}

// Target opens one configured target.
func Target(ctx context.Context, t config.Target) (storage.Target, error) {
	switch {
	case t.Local != nil:
		return storage.NewLocal(t.Name, t.Local.Path)
	case t.S3 != nil:
		s := t.S3
		o := storage.S3Options{
			Endpoint:     s.Endpoint,
			Region:       s.Region,
			Bucket:       s.Bucket,
			Prefix:       s.Prefix,
			AccessKey:    s.AccessKey,
			SecretKey:    s.SecretKey,
			Insecure:     s.Insecure,
			CAFile:       s.CA,
			PathStyle:    s.PathStyle,
			SSE:          s.SSE,
			KMSKeyID:     s.SSEKMSKeyID,
			StorageClass: s.StorageClass,
			PartSize:     int64(s.PartSizeMiB) << 20,
		}
		if s.ObjectLock != nil {
			o.LockMode, o.LockDays = s.ObjectLock.Mode, s.ObjectLock.Days
		}
		return storage.NewS3(ctx, t.Name, o)
	}
	return nil, fmt.Errorf("target %s: neither s3 nor local is set", t.Name)
}

// Recipients parses the public keys every backup is encrypted to: the
// inline ones and those of every recipients file, each key once. Either
// source may be empty (kdr init writes a config with only a file); the
// two together must name at least one key.
func Recipients(cfg *config.Config) ([]crypto.Recipient, error) {
	var all []crypto.Recipient
	// ParseRecipients refuses an empty list, which is no error here: the
	// keys may all be in files.
	if len(cfg.Encryption.Recipients) > 0 {
		rs, err := crypto.ParseRecipients(cfg.Encryption.Recipients)
		if err != nil {
			return nil, fmt.Errorf("encryption.recipients: %w", err)
		}
		all = rs
	}
	for _, f := range cfg.Encryption.RecipientsFiles {
		rs, err := crypto.LoadRecipientsFile(f)
		if err != nil {
			return nil, fmt.Errorf("encryption.recipientsFiles: %w", err)
		}
		all = append(all, rs...)
	}
	// A key both inline and in a file, or in two files, is one recipient:
	// the manifest lists each fingerprint once.
	seen := map[string]bool{}
	out := all[:0]
	for _, r := range all {
		if !seen[r.Fingerprint] {
			seen[r.Fingerprint] = true
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("encryption: %w", crypto.ErrNoRecipients)
	}
	return out, nil
}

// Etcd turns a cluster's etcd section into client options,
// loading the TLS files now so a bad path fails before any upload starts.
func Etcd(c config.Cluster) (snapshot.EtcdOptions, error) {
	// Validation refuses these; a config built in code may not have been
	// validated, and the endpoints go into the snapshot's errors and logs.
	for i, ep := range c.Etcd.Endpoints {
		if strings.Contains(ep, "@") {
			return snapshot.EtcdOptions{}, fmt.Errorf("cluster %s: etcd endpoint %d holds credentials: use username and password or passwordFile", c.Name, i+1)
		}
	}
	o := snapshot.EtcdOptions{
		Endpoints:   c.Etcd.Endpoints,
		Username:    c.Etcd.Username,
		Password:    c.Etcd.Password,
		Prefer:      c.Etcd.Prefer,
		DialTimeout: c.Etcd.DialTimeout,
	}
	if c.Etcd.TLS == nil {
		return o, nil
	}
	tc, err := ClientTLS(*c.Etcd.TLS)
	if err != nil {
		return o, fmt.Errorf("cluster %s: etcd tls: %w", c.Name, err)
	}
	o.TLS = tc
	return o, nil
}

// EtcdClient connects to the given endpoints of cluster c with the
// cluster's TLS and credentials, for a caller that asks questions rather
// than streams a snapshot. The dial does not block: an endpoint that does
// not answer fails the first request made with the client.
func EtcdClient(c config.Cluster, endpoints ...string) (*clientv3.Client, error) {
	o, err := Etcd(c)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		TLS:         o.TLS,
		Username:    o.Username,
		Password:    o.Password,
		DialTimeout: o.DialTimeout,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("cluster %s: connect to etcd %v: %w", c.Name, endpoints, err)
	}
	return cli, nil
}

// ClientTLS loads a TLS client configuration from its files.
func ClientTLS(t config.TLS) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.Cert != "" || t.Key != "" {
		cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("client certificate %s / %s: %w", t.Cert, t.Key, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca %s: no PEM certificate in it", t.CA)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// PickTarget returns the named target, or the first when name is empty.
func PickTarget(cfg *config.Config, name string) (config.Target, error) {
	for _, t := range cfg.Targets {
		if name == "" || t.Name == name {
			return t, nil
		}
	}
	return config.Target{}, fmt.Errorf("no target %q in the config", name)
}

// Source says where a restore reads the set from.
func Source(t config.Target) restore.Source {
	if t.S3 != nil {
		return restore.Source{Kind: "s3", Endpoint: t.S3.Endpoint, Bucket: t.S3.Bucket, Prefix: t.S3.Prefix, Insecure: t.S3.Insecure}
	}
	return restore.Source{Kind: "local", Path: t.Local.Path}
}

// Backup returns the options that back up cluster c to targets. The etcd
// TLS files are loaded now, so a bad path fails before any upload starts.
func Backup(c config.Cluster, rs []crypto.Recipient, signer *manifest.Signer, trust *manifest.Trust, targets []storage.Target) (snapshot.Options, error) {
	eo, err := Etcd(c)
	if err != nil {
		return snapshot.Options{}, err
	}
	return snapshot.Options{
		Cluster:    c.Name,
		Etcd:       eo,
		State:      c.State,
		Inventory:  c.Inventory,
		Recipients: rs,
		Signer:     signer,
		Trust:      trust,
		Targets:    targets,
		KdrVersion: version.Version,
	}, nil
}

// Policy is the retention policy prune applies.
func Policy(r config.Retention) catalog.Policy {
	return catalog.Policy{
		KeepLast: r.KeepLast, KeepHourly: r.KeepHourly, KeepDaily: r.KeepDaily,
		KeepWeekly: r.KeepWeekly, KeepMonthly: r.KeepMonthly, KeepYearly: r.KeepYearly,
		KeepLog: r.KeepLog,
	}
}

// Trust loads the public keys whose signatures make a set ours: the
// inline ones and those of every trusted keys file.
func Trust(cfg *config.Config) (*manifest.Trust, error) {
	lines, err := TrustedKeyLines(cfg)
	if err != nil {
		return nil, err
	}
	t, err := manifest.ParseTrust(lines)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	if len(t.Fingerprints()) == 0 {
		return nil, fmt.Errorf("signing: %w", manifest.ErrNoTrustedKeys)
	}
	return t, nil
}

// TrustedKeyLines returns the trusted public keys as the config gives
// them, inline and from every trusted keys file, one "ssh-ed25519 ..."
// per line (files may add blank lines and comments), so that a config
// written elsewhere (the recovery kit's) can list them inline.
func TrustedKeyLines(cfg *config.Config) ([]string, error) {
	lines := append([]string(nil), cfg.Signing.TrustedKeys...)
	for _, f := range cfg.Signing.TrustedKeysFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("signing.trustedKeysFiles: %w", err)
		}
		lines = append(lines, strings.Split(string(b), "\n")...)
	}
	return lines, nil
}

// Signer loads the signing key of a writer (backup, prune, the agent),
// and refuses one that the config's own trusted keys do not include: what
// it signed would be refused by every reader of this config.
func Signer(cfg *config.Config, trust *manifest.Trust) (*manifest.Signer, error) {
	if cfg.Signing.KeyFile == "" {
		return nil, errors.New("signing.keyFile is not set: a writer signs what it stores, and readers trust nothing else (`kdr keys generate --signing --out signing.key` makes a key)")
	}
	s, err := manifest.LoadSigner(cfg.Signing.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("signing.keyFile: %w", err)
	}
	if !slices.Contains(trust.Fingerprints(), s.Fingerprint()) {
		return nil, fmt.Errorf("signing.keyFile: key %s is not among the trusted keys (signing.trustedKeys): add its public key %q", s.Fingerprint(), s.PublicKey())
	}
	return s, nil
}
