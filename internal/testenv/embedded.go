package testenv

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// EmbeddedOptions shape an etcd run inside the test process.
type EmbeddedOptions struct {
	// Name is the member's name (default "default").
	Name string
	// Dir is its data dir (default a fresh temp dir): an existing one
	// serves the data in it.
	Dir string
}

// StartEmbedded runs a quiet one-member etcd inside the test process on
// loopback ports, serving plain http, until the test ends, and returns a
// client of it and its client URL.
func StartEmbedded(t testing.TB, o EmbeddedOptions) (*clientv3.Client, string) {
	t.Helper()
	cfg := embed.NewConfig()
	if o.Name != "" {
		cfg.Name = o.Name
	}
	cfg.Dir = o.Dir
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	client := fmt.Sprintf("http://127.0.0.1:%d", FreePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", FreePort(t))
	for _, p := range []struct {
		dst *[]url.URL
		u   string
	}{{&cfg.ListenClientUrls, client}, {&cfg.AdvertiseClientUrls, client}, {&cfg.ListenPeerUrls, peer}, {&cfg.AdvertisePeerUrls, peer}} {
		u, err := url.Parse(p.u)
		if err != nil {
			t.Fatal(err)
		}
		*p.dst = []url.URL{*u}
	}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(time.Minute):
		t.Fatal("etcd not ready within a minute")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli, client
}
