//go:build tools

// Package tools pins the Kubernetes binaries the tests run: kube-apiserver,
// kubeadm and kubectl for kubeadm hosts on loopback, and kubelet,
// kube-controller-manager, kube-scheduler and kube-proxy for the real node
// the agent's Deployment runs on (internal/testenv/node.go).
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
