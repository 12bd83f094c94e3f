package doctor

import (
	"errors"
	"testing"

	"github.com/kdr-io/kdr/config"
)

func local(name string) config.Target {
	return config.Target{Name: name, Local: &config.LocalTarget{Path: "/mnt/" + name}}
}

func s3(name string, lockDays int) config.Target {
	t := config.Target{Name: name, S3: &config.S3Target{Endpoint: "s3.example:9000", Bucket: "kdr"}}
	if lockDays > 0 {
		t.S3.ObjectLock = &config.ObjectLock{Mode: "COMPLIANCE", Days: lockDays}
	}
	return t
}

func targets(ts ...config.Target) facts { return facts{targets: ts} }

func TestGradeFailureDomains(t *testing.T) {
	runGradeCases(t, gradeFailureDomains, []gradeCase{
		{"one local", targets(local("usb")), Warn, []string{"a single target, usb (local): one failure domain", "add a remote (s3) one"}},
		{"one s3", targets(s3("s3", 0)), Warn, []string{"a single target, s3 (s3)", "add an offline (local) one"}},
		{"two local", targets(local("usb"), local("nfs")), Warn, []string{"2 targets, all local (usb, nfs): one failure domain"}},
		{"two s3", targets(s3("a", 0), s3("b", 0)), Warn, []string{"all s3 (a, b)", "add an offline (local) one"}},
		{"local and s3", targets(s3("s3", 0), local("usb")), Pass, []string{"offline (local: usb) and remote (s3: s3)"}},
		{"none", targets(), Fail, nil},
	})
}

func TestGradeObjectLock(t *testing.T) {
	runGradeCases(t, gradeObjectLock, []gradeCase{
		{"no s3", targets(local("usb")), Pass, []string{"no S3 target"}},
		{"locked", targets(s3("s3", 30), local("usb")), Pass, []string{"every S3 target locks its objects (s3: COMPLIANCE 30 days)"}},
		{"unlocked", targets(s3("s3", 0)), Warn, []string{"1 S3 target without objectLock (s3): a stolen credential can delete"}},
		{"one of two unlocked", targets(s3("a", 7), s3("b", 0)), Warn, []string{"(b)"}},
	})
}

func TestGradeRecipients(t *testing.T) {
	runGradeCases(t, gradeRecipients, []gradeCase{
		{"none", facts{}, Fail, []string{"no age recipient"}},
		{"one", facts{recipients: 1}, Warn, []string{"a lost key is a lost backup"}},
		{"two", facts{recipients: 2}, Pass, []string{"2 age recipients"}},
		{"unreadable", facts{recipients: 0, recipientsErr: errors.New("recipients file: no such file")}, Fail, []string{"no such file"}},
	})
}
