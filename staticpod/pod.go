package staticpod

import (
	"errors"
	"fmt"
	"path"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// MaxManifestSize bounds a manifest read from a host or a backup; kubeadm's
// are about 4 KiB.
const MaxManifestSize = 1 << 20

// ErrNotPod means the file is not a static pod manifest.
var ErrNotPod = errors.New("not a static pod manifest")

// Pod is one static pod manifest.
type Pod struct {
	pod corev1.Pod
}

// Parse reads a static pod manifest. It needs kind Pod with one container
// that has a command; anything else is ErrNotPod.
func Parse(raw []byte) (*Pod, error) {
	if len(raw) > MaxManifestSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrNotPod, MaxManifestSize)
	}
	var p Pod
	if err := yaml.UnmarshalStrict(raw, &p.pod); err != nil {
		// Strict first so a typo is reported; a manifest with fields this
		// version does not know still parses.
		if err := yaml.Unmarshal(raw, &p.pod); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNotPod, err)
		}
	}
	if p.pod.Kind != "Pod" || !strings.HasPrefix(p.pod.APIVersion, "v1") {
		return nil, fmt.Errorf("%w: kind %q, apiVersion %q", ErrNotPod, p.pod.Kind, p.pod.APIVersion)
	}
	if len(p.pod.Spec.Containers) == 0 || len(p.pod.Spec.Containers[0].Command) == 0 {
		return nil, fmt.Errorf("%w: pod %s has no container with a command", ErrNotPod, p.pod.Name)
	}
	return &p, nil
}

// Marshal writes the manifest back as YAML, as kubeadm writes it.
func (p *Pod) Marshal() ([]byte, error) {
	out, err := yaml.Marshal(&p.pod)
	if err != nil {
		return nil, fmt.Errorf("write pod %s: %w", p.pod.Name, err)
	}
	return out, nil
}

// Component is the control-plane component the pod runs: its "component"
// label as kubeadm sets it, else its command's name.
func (p *Pod) Component() string {
	if c := p.pod.Labels["component"]; c != "" {
		return c
	}
	return path.Base(p.container().Command[0])
}

func (p *Pod) container() *corev1.Container { return &p.pod.Spec.Containers[0] }

// args is the command line after the binary: kubeadm puts every flag in
// command; a hand-written manifest may use args too.
func (p *Pod) args() []string {
	c := p.container()
	return append(append([]string(nil), c.Command[1:]...), c.Args...)
}

// Flag is one --name=value of the main container's command line.
type Flag struct{ Name, Value string }

// Flags lists the main container's --name=value flags in order. A flag
// given as "--name value" is read too.
func (p *Pod) Flags() []Flag {
	args := p.args()
	var out []Flag
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "--") {
			continue
		}
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !ok && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			value = args[i+1]
			i++
		}
		out = append(out, Flag{Name: name, Value: value})
	}
	return out
}

// Flag returns the last value of --name (the one the program uses).
func (p *Pod) Flag(name string) (string, bool) {
	var v string
	found := false
	for _, f := range p.Flags() {
		if f.Name == name {
			v, found = f.Value, true
		}
	}
	return v, found
}

// SetFlag sets --name=value: every occurrence in command or args is
// replaced, or the flag is appended to the command when it has none.
func (p *Pod) SetFlag(name, value string) {
	c := p.container()
	found := false
	for _, list := range []*[]string{&c.Command, &c.Args} {
		for i := 0; i < len(*list); i++ {
			a := (*list)[i]
			switch {
			case strings.HasPrefix(a, "--"+name+"="):
				(*list)[i] = "--" + name + "=" + value
				found = true
			case a == "--"+name && i+1 < len(*list) && !strings.HasPrefix((*list)[i+1], "-"):
				(*list)[i+1] = value
				found = true
			}
		}
	}
	if !found {
		c.Command = append(c.Command, "--"+name+"="+value)
	}
}

// Annotation returns one of the pod's annotations.
func (p *Pod) Annotation(key string) string { return p.pod.Annotations[key] }

// SetAnnotation sets an annotation the pod already has; kubeadm reads some
// of them back (the etcd and API server endpoints) on join and upgrade.
func (p *Pod) SetAnnotation(key, value string) {
	if _, ok := p.pod.Annotations[key]; ok {
		p.pod.Annotations[key] = value
	}
}

// ReplaceProbeHost points every HTTP probe of the pod's containers that
// asks old at host instead: kubeadm probes the API server on its
// advertise address.
func (p *Pod) ReplaceProbeHost(old, host string) {
	for i := range p.pod.Spec.Containers {
		c := &p.pod.Spec.Containers[i]
		for _, pr := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
			if pr != nil && pr.HTTPGet != nil && pr.HTTPGet.Host == old {
				pr.HTTPGet.Host = host
			}
		}
	}
}

// ProbeHosts lists the hosts the pod's HTTP probes ask, in order.
func (p *Pod) ProbeHosts() []string {
	var out []string
	for _, c := range p.pod.Spec.Containers {
		for _, pr := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
			if pr != nil && pr.HTTPGet != nil {
				out = append(out, pr.HTTPGet.Host)
			}
		}
	}
	return out
}

// HostPath maps a path as the main container sees it to the host path
// that backs it, through the volume mounted at the longest prefix of it.
// ok is false when no hostPath volume covers it: the file is inside the
// image or on another kind of volume, and not the host's.
func (p *Pod) HostPath(containerPath string) (hostPath string, ok bool) {
	containerPath = path.Clean(containerPath)
	best := -1
	for _, m := range p.container().VolumeMounts {
		mp := path.Clean(m.MountPath)
		if !within(containerPath, mp) || len(mp) <= best {
			continue
		}
		v := p.volume(m.Name)
		if v == nil || v.HostPath == nil {
			continue
		}
		rest := strings.TrimPrefix(containerPath, mp)
		if m.SubPath != "" {
			rest = "/" + m.SubPath + rest
		}
		hostPath, best, ok = path.Clean(v.HostPath.Path+rest), len(mp), true
	}
	return hostPath, ok
}

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

func (p *Pod) volume(name string) *corev1.Volume {
	for i := range p.pod.Spec.Volumes {
		if p.pod.Spec.Volumes[i].Name == name {
			return &p.pod.Spec.Volumes[i]
		}
	}
	return nil
}

// SetMount makes the main container see hostPath at containerPath: the
// mount at exactly containerPath (or one backed by oldHostPath) is moved
// there with its volume, or a new hostPath volume is added.
func (p *Pod) SetMount(containerPath, oldHostPath, hostPath string) {
	c := p.container()
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		v := p.volume(m.Name)
		if v == nil || v.HostPath == nil {
			continue
		}
		if path.Clean(m.MountPath) == path.Clean(containerPath) || (oldHostPath != "" && path.Clean(v.HostPath.Path) == path.Clean(oldHostPath)) {
			m.MountPath = containerPath
			v.HostPath.Path = hostPath
			return
		}
	}
	name := "kdr-" + strings.Trim(strings.ReplaceAll(containerPath, "/", "-"), "-")
	dirOrCreate := corev1.HostPathDirectoryOrCreate
	p.pod.Spec.Volumes = append(p.pod.Spec.Volumes, corev1.Volume{
		Name:         name,
		VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostPath, Type: &dirOrCreate}},
	})
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: name, MountPath: containerPath})
}
