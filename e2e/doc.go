// Package e2e holds the end-to-end tests of kdr: the real kdr binary,
// built once per run, against real etcd processes, a real MinIO server and
// local directories, with the standard age, zstd, tar and etcdutl tools
// standing in for the operator who restores without kdr. Everything runs
// on 127.0.0.1 and in temporary directories.
package e2e
