package restore

import (
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// isMountPoint reports whether a filesystem (or a bind mount) is mounted
// at dir. etcd often has a disk of its own mounted at its data dir, and
// such a directory cannot be renamed (EBUSY), nor replaced by a directory
// built beside it, which would sit on another disk.
func isMountPoint(dir string) (bool, error) {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, dir, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS, &st); err != nil {
		return false, &os.PathError{Op: "statx", Path: dir, Err: err}
	}
	if st.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		// Linux 5.8 and later know bind mounts of the same filesystem,
		// which a comparison of devices misses.
		return st.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
	}
	var parent unix.Stat_t
	if err := unix.Lstat(filepath.Dir(dir), &parent); err != nil {
		return false, &os.PathError{Op: "lstat", Path: filepath.Dir(dir), Err: err}
	}
	return unix.Mkdev(st.Dev_major, st.Dev_minor) != parent.Dev, nil
}
