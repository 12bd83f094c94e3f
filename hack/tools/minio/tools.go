//go:build tools

// Package tools pins the MinIO server that tests and benchmarks start on loopback.
package tools

import _ "github.com/minio/minio"
