package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// footprint is what of the machine a node could change by mistake: the
// links and firewall rules of the machine's own network namespace. A node
// that keeps to its namespaces changes neither.
type footprint struct {
	links []string
	rules string
}

// iptablesCounters are the packet and byte counts iptables-save prints,
// which change with traffic.
var iptablesCounters = regexp.MustCompile(`\[\d+:\d+\]`)

func machineFootprint(ctx context.Context) (footprint, error) {
	var fp footprint
	out, err := commandOutput(ctx, "ip", "-o", "link", "show")
	if err != nil {
		return fp, err
	}
	for _, line := range strings.Split(out, "\n") {
		// "2: eth0@if3: <...> ..." -> eth0@if3
		if f := strings.Fields(line); len(f) > 1 {
			fp.links = append(fp.links, strings.TrimSuffix(f[1], ":"))
		}
	}
	slices.Sort(fp.links)
	var rules []string
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		out, err := commandOutput(ctx, save)
		if err != nil {
			return fp, err
		}
		for _, line := range strings.Split(out, "\n") {
			if !strings.HasPrefix(line, "#") {
				rules = append(rules, iptablesCounters.ReplaceAllString(line, ""))
			}
		}
	}
	fp.rules = strings.Join(rules, "\n")
	return fp, nil
}

// diff says how after differs from before.
func (before footprint) diff(after footprint) []string {
	var d []string
	for _, l := range after.links {
		if !slices.Contains(before.links, l) {
			d = append(d, "link "+l+" added to the machine's network namespace")
		}
	}
	for _, l := range before.links {
		if !slices.Contains(after.links, l) {
			d = append(d, "link "+l+" gone from the machine's network namespace")
		}
	}
	if before.rules != after.rules {
		d = append(d, fmt.Sprintf("the machine's firewall rules changed:\n--- before ---\n%s\n--- after ---\n%s", before.rules, after.rules))
	}
	return d
}

// nsInode is the inode of a namespace file, which identifies the
// namespace.
func nsInode(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// leftBehind lists what of the node outlived its teardown: processes in
// its network or mount namespace or its cgroups, mounts of its directory
// in the machine's mount table, its cgroups, and changes to the machine's
// links and firewall.
func (n *Node) leftBehind(ctx context.Context) []string {
	var left []string
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		pid, _ := strconv.Atoi(filepath.Base(p))
		for kind, ino := range map[string]uint64{"net": n.netIno, "mnt": n.mntIno} {
			if got, err := nsInode(filepath.Join(p, "ns", kind)); err == nil && ino != 0 && got == ino {
				left = append(left, fmt.Sprintf("process %d (%s) in the node's %s namespace", pid, comm(p), kind))
			}
		}
		if b, err := os.ReadFile(filepath.Join(p, "cgroup")); err == nil && strings.Contains(string(b), "/"+n.CgroupRoot) {
			left = append(left, fmt.Sprintf("process %d (%s) in the node's cgroups", pid, comm(p)))
		}
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, n.dir) {
				left = append(left, "mount: "+line)
			}
		}
	}
	if dirs, err := cgroupTrees(n.CgroupRoot); err == nil {
		for _, d := range dirs {
			left = append(left, "cgroup "+d)
		}
	}
	after, err := machineFootprint(ctx)
	if err != nil {
		left = append(left, err.Error())
	} else {
		left = append(left, n.before.diff(after)...)
	}
	return left
}

func comm(procDir string) string {
	b, _ := os.ReadFile(filepath.Join(procDir, "comm"))
	return strings.TrimSpace(string(b))
}
