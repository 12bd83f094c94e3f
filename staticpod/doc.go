// Package staticpod reads and rewrites the static pod manifests of a
// control plane (etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler) as Pods, not as text: the files a component reads, where
// etcd keeps its data, which addresses a node advertises.
//
// A backup uses it to find every file the control plane references, so
// that what a manifest names is captured whether or not a state set names
// it; a restore uses it to take the topology from the captured files and
// to make each node's manifests name that node, keeping flags, volumes,
// probes and annotations consistent with one another.
package staticpod
