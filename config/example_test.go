package config_test

import (
	"fmt"

	"github.com/kdr-io/kdr/config"
)

func ExampleParse() {
	_, err := config.Parse("kdr.yaml", []byte(`clusters:
  - name: prod
    etcd:
      endpoint: https://10.0.0.11:2379
encryption: {recipients: [age1pfz2wqrkh05nrg847tuc2dxryzlecazwrh2nc4prwmp6d98g23es6jnthh]}
signing: {trustedKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDkgk7G8drVjg7ABJHxC/jw5i0O5/dYexhQP+MkHl32q"]}
targets:
  - name: usb
    local: {path: /mnt/usb/kdr}
`))
	fmt.Println(err)
	// Output: kdr.yaml:4: unknown key "endpoint" in clusters[0].etcd (did you mean "endpoints"?)
}

func ExampleParse_defaults() {
	cfg, err := config.Parse("kdr.yaml", []byte(`clusters:
  - name: prod
    etcd:
      endpoints: [https://10.0.0.11:2379]
      tls: {ca: /pki/ca.crt, cert: /pki/client.crt, key: /pki/client.key}
encryption: {recipients: [age1pfz2wqrkh05nrg847tuc2dxryzlecazwrh2nc4prwmp6d98g23es6jnthh]}
signing: {trustedKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDkgk7G8drVjg7ABJHxC/jw5i0O5/dYexhQP+MkHl32q"]}
targets:
  - name: usb
    local: {path: /mnt/usb/kdr}
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	c := cfg.Clusters[0]
	fmt.Println(c.Etcd.Prefer, c.Etcd.DialTimeout, cfg.Schedule.Backup)
	for _, fs := range c.State {
		fmt.Println(fs.Name, fs.Paths, fs.Required)
	}
	// Output:
	// follower 5s */30 * * * *
	// pki [/etc/kubernetes/pki/**] true
	// kubeconfigs [/etc/kubernetes/*.conf] false
	// manifests [/etc/kubernetes/manifests/*] false
	// loadbalancer [/etc/haproxy/haproxy.cfg /etc/keepalived/keepalived.conf] false
	// dns [/etc/coredns/** /etc/bind/** /etc/named.conf /var/named/*] false
}
