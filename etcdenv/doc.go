// Package etcdenv reads the environment file an etcd run by systemd takes
// its flags from (ETCD_NAME, ETCD_DATA_DIR, ETCD_CERT_FILE, ...), as
// kubespray and the distributions' etcd packages install it. It is to
// such an etcd what its static pod manifest is to kubeadm's: a backup
// reads the member's name and data dir from it, a drill the files it
// names, each through this one reader so that both read it alike.
package etcdenv
