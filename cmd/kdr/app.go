package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/crypto"
	"github.com/kdr-io/kdr/snapshot"
	"github.com/kdr-io/kdr/storage"
)

// defaultConfigPaths are tried in order when --config is not given.
var defaultConfigPaths = []string{"kdr.yaml", "/etc/kdr/kdr.yaml"}

func loadConfig(path string) (*config.Config, error) {
	if path != "" {
		return config.Load(path)
	}
	for _, p := range defaultConfigPaths {
		if _, err := os.Stat(p); err == nil {
			return config.Load(p)
		}
	}
	return nil, errors.New("no config: pass --config FILE, or create ./kdr.yaml (kdr init writes an example)")
}

// selectClusters returns the named cluster, or all when name is empty.
func selectClusters(cfg *config.Config, name string) ([]config.Cluster, error) {
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

// openTargets builds the configured targets, or only the named one.
func openTargets(ctx context.Context, cfg *config.Config, only string) ([]storage.Target, error) {
	var out []storage.Target
	for _, t := range cfg.Targets {
		if only != "" && t.Name != only {
			continue
		}
		target, err := openTarget(ctx, t)
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

func openTarget(ctx context.Context, t config.Target) (storage.Target, error) {
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

// recipients parses the public keys every backup is encrypted to.
func recipients(cfg *config.Config) ([]crypto.Recipient, error) {
	rs, err := crypto.ParseRecipients(cfg.Encryption.Recipients)
	if err != nil {
		return nil, err
	}
	for _, f := range cfg.Encryption.RecipientsFiles {
		more, err := crypto.LoadRecipientsFile(f)
		if err != nil {
			return nil, err
		}
		rs = append(rs, more...)
	}
	return rs, nil
}

// etcdOptions turns a cluster's etcd section into client options,
// loading the TLS files now so a bad path fails before any upload starts.
func etcdOptions(c config.Cluster) (snapshot.EtcdOptions, error) {
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
	tc, err := clientTLS(*c.Etcd.TLS)
	if err != nil {
		return o, fmt.Errorf("cluster %s: etcd tls: %w", c.Name, err)
	}
	o.TLS = tc
	return o, nil
}

func clientTLS(t config.TLS) (*tls.Config, error) {
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
