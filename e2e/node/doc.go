// Package node holds the end-to-end test of kdr's in-cluster agent on a
// real node (internal/testenv.Node): the Deployment of deploy/ installed
// as deploy/README.md says, word for word, then put through upgrades and
// incidents. It is a package of its own so that `go test ./...` runs it
// beside the other end-to-end tests: it mostly waits for scheduled
// minutes.
package node
