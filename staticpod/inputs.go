package staticpod

import (
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// inputFlags are the flags whose values name files a component reads, by
// the command that takes them. Outputs (--audit-log-path, etcd's
// --data-dir) are not inputs: a restore must not bring back a log, and the
// data dir is what the snapshot replaces.
var inputFlags = map[string][]string{
	"kube-apiserver": {
		"admission-control-config-file", "audit-policy-file", "audit-webhook-config-file",
		"authentication-config", "authentication-token-webhook-config-file", "authorization-config",
		"authorization-webhook-config-file", "client-ca-file", "egress-selector-config-file",
		"encryption-provider-config", "etcd-cafile", "etcd-certfile", "etcd-keyfile",
		"kubelet-certificate-authority", "kubelet-client-certificate", "kubelet-client-key",
		"oidc-ca-file", "proxy-client-cert-file", "proxy-client-key-file",
		"requestheader-client-ca-file", "service-account-key-file", "service-account-signing-key-file",
		"tls-cert-file", "tls-private-key-file", "token-auth-file", "tracing-config-file",
		"tls-sni-cert-key",
	},
	"kube-controller-manager": {
		"authentication-kubeconfig", "authorization-kubeconfig", "client-ca-file",
		"cluster-signing-cert-file", "cluster-signing-key-file",
		"cluster-signing-kube-apiserver-client-cert-file", "cluster-signing-kube-apiserver-client-key-file",
		"cluster-signing-kubelet-client-cert-file", "cluster-signing-kubelet-client-key-file",
		"cluster-signing-kubelet-serving-cert-file", "cluster-signing-kubelet-serving-key-file",
		"cluster-signing-legacy-unknown-cert-file", "cluster-signing-legacy-unknown-key-file",
		"kubeconfig", "requestheader-client-ca-file", "root-ca-file", "service-account-private-key-file",
		"tls-cert-file", "tls-private-key-file",
	},
	"kube-scheduler": {
		"authentication-kubeconfig", "authorization-kubeconfig", "client-ca-file", "config",
		"kubeconfig", "requestheader-client-ca-file", "tls-cert-file", "tls-private-key-file",
	},
	"etcd": {
		"cert-file", "key-file", "trusted-ca-file", "peer-cert-file", "peer-key-file",
		"peer-trusted-ca-file", "client-crl-file", "config-file",
	},
}

// Input is one file a component reads from the host.
type Input struct {
	// Component is the pod's component (kube-apiserver, etcd...).
	Component string `json:"component"`
	// Flag is the flag that names the file, or for a file named by
	// another file, the flag that named that one.
	Flag string `json:"flag"`
	// Via is the host path of the file that names this one ("" when the
	// flag names it directly).
	Via string `json:"via,omitempty"`
	// Path is the file's path on the host.
	Path string `json:"path"`
}

// String names the input the way an operator would look for it.
func (in Input) String() string {
	if in.Via != "" {
		return fmt.Sprintf("%s (named in %s, from %s --%s)", in.Path, in.Via, in.Component, in.Flag)
	}
	return fmt.Sprintf("%s (%s --%s)", in.Path, in.Component, in.Flag)
}

// Inputs lists the host files the pod's flags name, in flag order, each
// mapped from the container's view to the host's through the pod's
// hostPath volumes. A path no hostPath volume covers lives in the image
// and is left out.
func (p *Pod) Inputs() []Input {
	comp := p.Component()
	names := inputFlags[comp]
	var out []Input
	for _, f := range p.Flags() {
		if !slices.Contains(names, f.Name) || f.Value == "" {
			continue
		}
		for _, v := range flagPaths(f) {
			if !path.IsAbs(v) {
				continue
			}
			if host, ok := p.HostPath(v); ok {
				out = append(out, Input{Component: comp, Flag: f.Name, Path: host})
			}
		}
	}
	return out
}

// flagPaths splits a flag's value into the paths it names:
// --tls-sni-cert-key=cert,key:names and a repeated list take several.
func flagPaths(f Flag) []string {
	v := f.Value
	if f.Name == "tls-sni-cert-key" {
		v, _, _ = strings.Cut(v, ":")
	}
	if f.Name == "tls-sni-cert-key" || f.Name == "service-account-key-file" {
		return strings.Split(v, ",")
	}
	return []string{v}
}

// nestedKeys are the keys under which the config files a component reads
// (kubeconfigs, admission, authorization, egress-selector and scheduler
// configs) name further files.
var nestedKeys = []string{
	// kubeconfig
	"certificate-authority", "client-certificate", "client-key", "tokenFile",
	// webhook and ImagePolicy configs, AuthorizationConfiguration
	// webhooks, KubeSchedulerConfiguration
	"kubeConfigFile", "kubeconfig",
	// EgressSelectorConfiguration TLS
	"caBundle", "clientKey", "clientCert",
}

// Nested lists the files that a config file (read as raw, found at
// hostPath) names in turn, relative names resolved against its directory.
// Only paths are taken; inline data (certificate-authority-data) is
// already in the file. A file that is not YAML names nothing.
func Nested(in Input, raw []byte) []Input {
	var doc any
	if len(raw) > MaxManifestSize || yaml.Unmarshal(raw, &doc) != nil {
		return nil
	}
	keys := nestedKeys
	if m, ok := doc.(map[string]any); ok && m["kind"] == "AdmissionConfiguration" {
		// Only here is "path" a file: each plugin's configuration.
		keys = append(slices.Clip(keys), "path")
	}
	var out []Input
	dir := path.Dir(in.Path)
	walk(doc, func(key, value string) {
		if !slices.Contains(keys, key) || value == "" || strings.Contains(value, "://") {
			return
		}
		if !path.IsAbs(value) {
			value = path.Join(dir, value)
		}
		out = append(out, Input{Component: in.Component, Flag: in.Flag, Via: in.Path, Path: path.Clean(value)})
	})
	return out
}

// walk calls fn for every string value of a decoded YAML document with
// the key that holds it.
func walk(doc any, fn func(key, value string)) {
	switch d := doc.(type) {
	case map[string]any:
		keys := make([]string, 0, len(d))
		for k := range d {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if s, ok := d[k].(string); ok {
				fn(k, s)
				continue
			}
			walk(d[k], fn)
		}
	case []any:
		for _, v := range d {
			walk(v, fn)
		}
	}
}

// systemTrust are the host's own trust stores, which kubeadm mounts into
// every control-plane pod: they belong to the operating system, not the
// cluster, and a restored host has its own.
var systemTrust = []string{
	"/etc/ssl/certs", "/etc/ca-certificates", "/usr/share/ca-certificates",
	"/usr/local/share/ca-certificates", "/etc/pki",
}

// IsSystemTrust reports whether p is in one of the host's own trust stores.
func IsSystemTrust(p string) bool {
	return slices.ContainsFunc(systemTrust, func(dir string) bool { return within(path.Clean(p), dir) })
}

// ReadFunc reads a host file, bounded in size.
type ReadFunc func(hostPath string) ([]byte, error)

// References lists every host file the pods read: the files their flags
// name, and the files those name in turn, each once, in the order found.
// A file read fails only when it is one that could name others (a config
// or kubeconfig is read to look inside); certificates and keys are not
// read here. The caller decides what a missing file means.
func References(pods []*Pod, read ReadFunc) ([]Input, error) {
	var out []Input
	seen := map[string]bool{}
	var add func(in Input) error
	add = func(in Input) error {
		if seen[in.Path] || IsSystemTrust(in.Path) {
			return nil
		}
		seen[in.Path] = true
		out = append(out, in)
		if !mayNameFiles(in) {
			return nil
		}
		raw, err := read(in.Path)
		if err != nil {
			return fmt.Errorf("%s: %w", in, err)
		}
		for _, n := range Nested(in, raw) {
			if err := add(n); err != nil {
				return err
			}
		}
		return nil
	}
	for _, p := range pods {
		for _, in := range p.Inputs() {
			if err := add(in); err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

// mayNameFiles: configs and kubeconfigs are looked into; certificates,
// keys, token files and policies are not.
func mayNameFiles(in Input) bool {
	switch ext := path.Ext(in.Path); {
	case ext == ".crt" || ext == ".key" || ext == ".pem" || ext == ".pub" || ext == ".csv":
		return false
	case in.Flag == "audit-policy-file" || in.Flag == "encryption-provider-config" || in.Flag == "token-auth-file":
		// Policies name nothing, and an encryption config's providers
		// name KMS sockets, which are not files to capture.
		return false
	}
	return strings.Contains(in.Flag, "config") || strings.Contains(in.Flag, "kubeconfig") || in.Via != ""
}

// HostReader is a ReadFunc for the host whose filesystem root is root
// ("/" on a real host): regular files only, bounded by MaxManifestSize,
// as the configs a control plane reads are a few KiB.
func HostReader(root string) ReadFunc {
	return func(hostPath string) ([]byte, error) {
		f, err := os.Open(filepath.Join(root, filepath.FromSlash(hostPath)))
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if fi, err := f.Stat(); err != nil {
			return nil, err
		} else if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s is not a regular file", hostPath)
		}
		raw, err := io.ReadAll(io.LimitReader(f, MaxManifestSize+1))
		if err != nil {
			return nil, err
		}
		if len(raw) > MaxManifestSize {
			return nil, fmt.Errorf("%s is larger than %d bytes", hostPath, MaxManifestSize)
		}
		return raw, nil
	}
}
