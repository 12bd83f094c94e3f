// Package pkicheck proves a restored control plane's PKI and kubeconfigs
// whole before anyone relies on them: every certificate under the kubeadm
// pki directory (or the directories a topology names: an external etcd's
// /etc/ssl/etcd/ssl) parses and chains to a CA of the same tree, every
// private key matches its certificate (sa.key its sa.pub, name-key.pem its
// name.pem), the files the topology requires are there, nothing has expired or
// is about to, and every kubeconfig trusts the restored cluster CA and holds
// a client certificate that CA signed, with the key that belongs to it. A
// kubeconfig that would make its reader run a command (exec, auth-provider),
// send a file (tokenFile) or read a file outside the Kubernetes directory
// fails: kubeadm writes none, and kubectl and the kubelet would do it as root.
//
// Run reads a tree below a sandbox root as a process chrooted into it
// would, following symbolic links inside the root only, so a drill never
// passes on the host's own /etc/kubernetes. The files come from a backup and
// may be damaged: every problem is a graded finding with its evidence, never
// an error or a panic.
package pkicheck
