package doctor

import (
	"errors"
	"testing"

	"github.com/kdr-io/kdr/config"
	"github.com/kdr-io/kdr/storage"
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
	lock := func(name string, lockDays int, got storage.BucketLock) lockFacts {
		return lockFacts{name: name, bucket: "kdr-" + name, want: s3(name, lockDays).S3.ObjectLock, got: got}
	}
	on := storage.BucketLock{Enabled: true}
	dflt := storage.BucketLock{Enabled: true, DefaultMode: "GOVERNANCE", DefaultValidity: 1, DefaultUnit: "YEARS"}
	locks := func(ls ...lockFacts) facts { return facts{locks: ls} }
	runGradeCases(t, gradeObjectLock, []gradeCase{
		{"no s3", locks(), Pass, []string{"no S3 target"}},
		{"locked", locks(lock("s3", 30, on)), Pass, []string{"every S3 target's bucket locks its objects (s3: COMPLIANCE 30 days)"}},
		{"the bucket's default locks", locks(lock("s3", 0, dflt)), Pass, []string{"(s3: bucket default GOVERNANCE 1 year)"}},
		{"objectLock on a bucket without", locks(lock("s3", 30, storage.BucketLock{})), Fail,
			[]string{"target s3 has objectLock, but bucket kdr-s3 has no Object Lock enabled: every backup to it fails"}},
		{"unlocked", locks(lock("s3", 0, storage.BucketLock{})), Warn, []string{"target s3: bucket kdr-s3 has no Object Lock: a stolen credential can delete"}},
		{"lock without retention", locks(lock("s3", 0, on)), Warn, []string{"has Object Lock but no default retention, and the target no objectLock"}},
		{"unreadable", locks(lockFacts{name: "s3", bucket: "kdr", want: &config.ObjectLock{Mode: "GOVERNANCE", Days: 7}, err: errors.New("Access Denied")}), Warn,
			[]string{"target s3: the Object Lock of bucket kdr cannot be read: Access Denied"}},
		{"one of two unlocked", locks(lock("a", 7, on), lock("b", 0, storage.BucketLock{})), Warn, []string{"target b:"}},
		{"the worst counts", locks(lock("a", 7, storage.BucketLock{}), lock("b", 0, storage.BucketLock{})), Fail, []string{"target a has objectLock", "target b: bucket kdr-b has no Object Lock"}},
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
