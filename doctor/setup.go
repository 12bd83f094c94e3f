package doctor

import (
	"fmt"
	"strings"
)

func gradeFailureDomains(f *facts) Result {
	var local, remote []string
	for _, t := range f.targets {
		switch {
		case t.Local != nil:
			local = append(local, t.Name)
		case t.S3 != nil:
			remote = append(remote, t.Name)
		}
	}
	ev := map[string]any{"local": len(local), "s3": len(remote)}
	switch {
	case len(f.targets) == 0:
		return verdict(Fail, ev, "no targets in the config")
	case len(local) > 0 && len(remote) > 0:
		return verdict(Pass, ev, "offline (local: %s) and remote (s3: %s) targets: losing either leaves the other",
			strings.Join(local, ", "), strings.Join(remote, ", "))
	}
	kind, names, advice := "local", local, "add a remote (s3) one"
	if len(remote) > 0 {
		kind, names, advice = "s3", remote, "add an offline (local) one, out of reach of the network and the credentials"
	}
	if len(names) == 1 {
		return verdict(Warn, ev, "a single target, %s (%s): one failure domain holds every backup; %s", names[0], kind, advice)
	}
	return verdict(Warn, ev, "%d targets, all %s (%s): one failure domain; %s", len(names), kind, strings.Join(names, ", "), advice)
}

func gradeObjectLock(f *facts) Result {
	var locked, open []string
	for _, t := range f.targets {
		switch {
		case t.S3 == nil:
		case t.S3.ObjectLock != nil:
			locked = append(locked, fmt.Sprintf("%s: %s %s", t.Name, t.S3.ObjectLock.Mode, plural(t.S3.ObjectLock.Days, "day")))
		default:
			open = append(open, t.Name)
		}
	}
	ev := map[string]any{"locked": len(locked), "unlocked": len(open)}
	switch {
	case len(open) > 0:
		return verdict(Warn, ev, "%s without objectLock (%s): a stolen credential can delete the backups there",
			plural(len(open), "S3 target"), strings.Join(open, ", "))
	case len(locked) == 0:
		return verdict(Pass, ev, "no S3 target to lock")
	}
	return verdict(Pass, ev, "every S3 target locks its objects (%s)", strings.Join(locked, "; "))
}

func gradeRecipients(f *facts) Result {
	n := f.recipients
	ev := map[string]any{"recipients": n}
	switch {
	case f.recipientsErr != nil:
		return verdict(Fail, ev, "the recipients cannot be read: %v", f.recipientsErr)
	case n == 0:
		return verdict(Fail, ev, "no age recipient: nothing can be encrypted")
	case n == 1:
		return verdict(Warn, ev, "1 age recipient: a lost key is a lost backup; add a second, kept apart (kdr keys generate)")
	}
	return verdict(Pass, ev, "%d age recipients: any one of their keys decrypts", n)
}
