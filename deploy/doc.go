// Package deploy holds the manifests that install `kdr agent` in a cluster
// (base, the prometheus-operator monitoring component, and default, the
// two together) and the tests that build them with kustomize, decode every
// object strictly, check what matters about each, validate the agent's
// config and run promtool on the alerts. The package has no Go API.
package deploy
