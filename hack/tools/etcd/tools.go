//go:build tools

// Package tools pins the etcd command-line tools that tests and the demo use.
package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/etcdutl/v3"
)
