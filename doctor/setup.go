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

// gradeObjectLock judges what each S3 bucket says, not what the config
// asks: an objectLock the bucket cannot honour fails every backup to it,
// and a bucket's default retention locks objects the config does not.
func gradeObjectLock(f *facts) Result {
	perTarget := map[string]any{}
	ev := map[string]any{"targets": perTarget}
	worst := Pass
	var locked, problems []string
	for _, l := range f.locks {
		te := map[string]any{"bucket": l.bucket}
		perTarget[l.name] = te
		if l.want != nil {
			te["configuredMode"], te["configuredDays"] = l.want.Mode, l.want.Days
		}
		if l.err != nil {
			te["error"] = l.err.Error()
			worst = max(worst, Warn)
			problems = append(problems, fmt.Sprintf("target %s: the Object Lock of bucket %s cannot be read: %v", l.name, l.bucket, l.err))
			continue
		}
		te["objectLockEnabled"] = l.got.Enabled
		dflt := ""
		if l.got.DefaultMode != "" {
			te["defaultMode"], te["defaultValidity"], te["defaultUnit"] = l.got.DefaultMode, l.got.DefaultValidity, l.got.DefaultUnit
			dflt = l.got.DefaultMode
			if l.got.DefaultValidity > 0 && l.got.DefaultUnit != "" {
				// "DAYS" and "YEARS", as S3 spells them.
				unit := strings.ToLower(strings.TrimSuffix(l.got.DefaultUnit, "S"))
				dflt += " " + plural(int(l.got.DefaultValidity), unit)
			}
		}
		switch {
		case l.want != nil && !l.got.Enabled:
			worst = max(worst, Fail)
			problems = append(problems, fmt.Sprintf("target %s has objectLock, but bucket %s has no Object Lock enabled: every backup to it fails (create the bucket with object locking or remove objectLock)", l.name, l.bucket))
		case l.want != nil:
			locked = append(locked, fmt.Sprintf("%s: %s %s", l.name, l.want.Mode, plural(l.want.Days, "day")))
		case dflt != "":
			locked = append(locked, fmt.Sprintf("%s: bucket default %s", l.name, dflt))
		case l.got.Enabled:
			worst = max(worst, Warn)
			problems = append(problems, fmt.Sprintf("target %s: bucket %s has Object Lock but no default retention, and the target no objectLock: its objects are stored unlocked", l.name, l.bucket))
		default:
			worst = max(worst, Warn)
			problems = append(problems, fmt.Sprintf("target %s: bucket %s has no Object Lock: a stolen credential can delete the backups there", l.name, l.bucket))
		}
	}
	ev["locked"], ev["unlocked"] = len(locked), len(f.locks)-len(locked)
	switch {
	case len(f.locks) == 0:
		return verdict(Pass, ev, "no S3 target to lock")
	case len(problems) > 0:
		return verdict(worst, ev, "%s", strings.Join(problems, "; "))
	}
	return verdict(Pass, ev, "every S3 target's bucket locks its objects (%s)", strings.Join(locked, "; "))
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
