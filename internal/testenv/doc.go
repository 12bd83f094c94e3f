// Package testenv gives tests the real parts they run against: tool
// binaries built by `make tools`, free loopback ports, and processes such as
// a MinIO server and etcd members, each stopped when its test ends.
package testenv
