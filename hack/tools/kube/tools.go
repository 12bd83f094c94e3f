//go:build tools

// Package tools pins the Kubernetes control-plane binaries (kube-apiserver,
// kubeadm, kubectl) that tests run against a real kubeadm host on loopback.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
