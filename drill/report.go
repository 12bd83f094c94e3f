package drill

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/go-pdf/fpdf"

	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/storage"
)

// Grade is a check's outcome.
type Grade string

const (
	Pass Grade = "pass"
	Warn Grade = "warn"
	Fail Grade = "fail"
)

func (g Grade) rank() int { return slices.Index([]Grade{Pass, Warn, Fail}, g) }

// Check is one proof the drill made, with its evidence.
type Check struct {
	ID      string `json:"id"`
	Subject string `json:"subject"`
	Grade   Grade  `json:"grade"`
	Reason  string `json:"reason"`
}

// StepTiming is one restore step on one node.
type StepTiming struct {
	Node    string  `json:"node"`
	Step    string  `json:"step"`
	Seconds float64 `json:"seconds"`
	Error   string  `json:"error,omitempty"`
	started time.Time
}

// Report is what a drill did and found. It holds no secret: it is stored
// unencrypted beside the backups.
type Report struct {
	ID          string    `json:"id"`
	Cluster     string    `json:"cluster"`
	Backup      string    `json:"backup"`
	BackupTaken time.Time `json:"backupTaken"`
	Target      string    `json:"target"`
	Started     time.Time `json:"started"`
	Finished    time.Time `json:"finished"`
	Result      Grade     `json:"result"`
	RTOSeconds  float64   `json:"rtoSeconds"`
	RPOSeconds  float64   `json:"rpoSeconds"`
	// VerifySeconds is how long the checks after the restore took;
	// APIServerSeconds how long kube-apiserver took to serve, when one ran.
	VerifySeconds    float64 `json:"verifySeconds"`
	APIServerSeconds float64 `json:"apiServerSeconds,omitempty"`
	// Revision, when not 0, is the revision the drill restored to by
	// replaying the set's captured log, and Replay what the replay did.
	Revision int64          `json:"revision,omitempty"`
	Replay   *ReplaySummary `json:"replay,omitempty"`
	Members  int            `json:"members"`
	Keys     int64          `json:"keys"`
	Checks   []Check        `json:"checks"`
	Steps    []StepTiming   `json:"steps"`
	// History is the earlier drills of the cluster on the target, newest
	// first; it is filled when the report is rendered, not stored.
	History []Summary `json:"history,omitempty"`
}

// ReplaySummary is what a drill's replay did.
type ReplaySummary struct {
	// Base is the revision of the set's snapshot, Revision the one the
	// replay reached, Applied the revisions it applied from Segments
	// segments.
	Base     int64 `json:"base"`
	Revision int64 `json:"revision"`
	Applied  int64 `json:"applied"`
	Segments int   `json:"segments"`
	// Seconds is the slowest member's replay step: the replay time.
	Seconds float64 `json:"seconds"`
	// ProvedAt is the revision of the HashKV the replay matched; 0 when
	// the log recorded none at or before Revision.
	ProvedAt int64 `json:"provedAt,omitempty"`
}

// Summary is a drill in the history.
type Summary struct {
	ID         string    `json:"id"`
	Backup     string    `json:"backup"`
	Finished   time.Time `json:"finished"`
	Result     Grade     `json:"result"`
	RTOSeconds float64   `json:"rtoSeconds"`
	RPOSeconds float64   `json:"rpoSeconds"`
	// Replay is what the drill's replay of the log did, nil for a drill
	// of a set as it is.
	Replay *ReplaySummary `json:"replay,omitempty"`
}

func (r *Report) add(c Check) { r.Checks = append(r.Checks, c) }

func (r *Report) step(node, id, state string, err error, now time.Time) {
	switch state {
	case "running":
		r.Steps = append(r.Steps, StepTiming{Node: node, Step: id, started: now})
	case "done", "failed":
		for i := len(r.Steps) - 1; i >= 0; i-- {
			if s := &r.Steps[i]; s.Node == node && s.Step == id && s.Seconds == 0 {
				s.Seconds = now.Sub(s.started).Seconds()
				if err != nil {
					s.Error = oneLine(err)
				}
				break
			}
		}
	}
}

// finish grades the drill by its worst check.
func (r *Report) finish(now time.Time) {
	r.Finished = now.UTC()
	r.Result = Pass
	for _, c := range r.Checks {
		if c.Grade.rank() > r.Result.rank() {
			r.Result = c.Grade
		}
	}
}

// Failures lists the failed checks, for a one-line error.
func (r *Report) Failures() []string {
	var out []string
	for _, c := range r.Checks {
		if c.Grade == Fail {
			out = append(out, c.ID+" "+c.Subject+": "+c.Reason)
		}
	}
	return out
}

// reportPrefix is where a cluster's drill reports live on a target,
// beside its backup sets; it is no backup ID, so catalogs pass it by.
func reportPrefix(cluster string) string { return cluster + "/drills/" }

// maxClockSkew is how far ahead a report's time may be.
const maxClockSkew = 5 * time.Minute

// maxReportSize bounds what History reads of one report.
const maxReportSize = 4 << 20

// Store writes the report as JSON, Markdown and PDF to the target, each
// signed: readers (the agent's metrics, doctor, the next drill's history)
// believe only a report a trusted key signed.
func Store(ctx context.Context, t storage.Target, signer *manifest.Signer, r *Report) error {
	if !manifest.ValidCluster(r.Cluster) || !manifest.ValidID(r.ID) {
		return fmt.Errorf("drill report %s/%s: not a valid name", r.Cluster, r.ID)
	}
	stored := *r
	stored.History = nil
	js, err := json.MarshalIndent(stored, "", "  ")
	if err != nil {
		return err
	}
	var md, pdf bytes.Buffer
	if err := Markdown(&md, r); err != nil {
		return err
	}
	if err := PDF(&pdf, r); err != nil {
		return err
	}
	// The JSON goes last: History lists what has it, so a report cut off
	// by a failure is never half listed.
	for _, o := range []struct {
		ext, contentType string
		data             []byte
	}{{"md", "text/markdown; charset=utf-8", md.Bytes()}, {"pdf", "application/pdf", pdf.Bytes()}, {"json", "application/json", js}} {
		key := reportPrefix(r.Cluster) + r.ID + "." + o.ext
		if err := manifest.PutSigned(ctx, t, key, o.data, manifest.NamespaceDrillReport, signer, storage.PutOptions{ContentType: o.contentType}); err != nil {
			return fmt.Errorf("store drill report: %w", err)
		}
	}
	return nil
}

// History reads the drills of a cluster stored on a target, newest first.
// A report that no trusted key signed, or that does not parse, is
// skipped: a planted report must not fake a recent successful drill.
func History(ctx context.Context, t storage.Target, trust *manifest.Trust, cluster string) ([]Summary, error) {
	var keys []string
	err := t.List(ctx, reportPrefix(cluster), func(o storage.ObjectInfo) error {
		if strings.HasSuffix(o.Key, ".json") {
			keys = append(keys, o.Key)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []Summary
	for _, k := range slices.Backward(keys) {
		s, err := readSummary(ctx, t, trust, cluster, k)
		if err != nil {
			if errors.Is(err, ctx.Err()) && ctx.Err() != nil {
				return out, err
			}
			continue
		}
		out = append(out, s)
	}
	return out, nil
}

func readSummary(ctx context.Context, t storage.Target, trust *manifest.Trust, cluster, key string) (Summary, error) {
	raw, err := manifest.ReadSigned(ctx, t, key, maxReportSize, manifest.NamespaceDrillReport, trust)
	if err != nil {
		return Summary{}, err
	}
	var s Summary
	if err := json.Unmarshal(raw, &s); err != nil {
		return Summary{}, err
	}
	// A genuine report copied to another name, or dated ahead of every
	// clock, would fake a recent drill.
	if key != reportPrefix(cluster)+s.ID+".json" || s.Finished.After(time.Now().Add(maxClockSkew)) {
		return Summary{}, fmt.Errorf("%s: %w: drill %s finished %s", key, manifest.ErrInvalid, s.ID, s.Finished)
	}
	return s, nil
}

// replayText says in one line what a drill's replay did ("" when the
// drill restored a set as it is).
func (r *Report) replayText() string {
	p := r.Replay
	if p == nil {
		return ""
	}
	s := fmt.Sprintf("%d: the set's %d + %d revisions replayed from %d segment(s) in %.1f s", p.Revision, p.Base, p.Applied, p.Segments, p.Seconds)
	if p.ProvedAt > 0 {
		s += fmt.Sprintf(", proved at %d", p.ProvedAt)
	}
	return s
}

var mdTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"secs": func(f float64) string { return fmt.Sprintf("%.1f s", f) },
	"time": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	"dur":  func(f float64) string { return (time.Duration(f) * time.Second).Round(time.Second).String() },
	"cell": func(s string) string { return strings.ReplaceAll(s, "|", "\\|") },
}).Parse(`# Restore drill {{.ID}}: {{.Result}}

| | |
|---|---|
| cluster | {{.Cluster}} |
| backup | {{.Backup}}, taken {{time .BackupTaken}} |
{{with .Replay}}| revision | {{.Revision}}: the set's {{.Base}} + {{.Applied}} revisions replayed from {{.Segments}} segment(s){{if .ProvedAt}}, proved at {{.ProvedAt}}{{end}} |
| replay time | {{secs .Seconds}} |
{{end}}| target | {{.Target}} |
| drill | {{time .Started}} to {{time .Finished}} |
| etcd members | {{.Members}} |
| keys | {{.Keys}} |
| RTO (start to healthy etcd) | {{secs .RTOSeconds}} |
| RPO (age of the restored data) | {{dur .RPOSeconds}} |

## Checks

| grade | check | subject | evidence |
|---|---|---|---|
{{range .Checks}}| {{.Grade}} | {{.ID}} | {{cell .Subject}} | {{cell .Reason}} |
{{end}}
## Restore steps

| node | step | time | error |
|---|---|---|---|
{{range .Steps}}| {{.Node}} | {{.Step}} | {{secs .Seconds}} | {{cell .Error}} |
{{end}}{{if .History}}
## Earlier drills

| drill | backup | finished | result | RTO | RPO |
|---|---|---|---|---|---|
{{range .History}}| {{.ID}} | {{.Backup}} | {{time .Finished}} | {{.Result}} | {{secs .RTOSeconds}} | {{dur .RPOSeconds}} |
{{end}}{{end}}`))

// Markdown renders the report for people.
func Markdown(w io.Writer, r *Report) error { return mdTemplate.Execute(w, r) }

// PDF renders the report for print: the same content as the Markdown,
// black on white, with page numbers.
func PDF(w io.Writer, r *Report) error {
	f := fpdf.New("P", "mm", "A4", "")
	tr := f.UnicodeTranslatorFromDescriptor("")
	f.SetFooterFunc(func() {
		f.SetY(-12)
		f.SetFont("Helvetica", "", 8)
		f.CellFormat(0, 5, fmt.Sprintf("kdr drill %s - page %d", r.ID, f.PageNo()), "", 0, "C", false, 0, "")
	})
	f.AddPage()
	f.SetFont("Helvetica", "B", 16)
	f.MultiCell(0, 8, tr(fmt.Sprintf("Restore drill %s: %s", r.ID, strings.ToUpper(string(r.Result)))), "", "L", false)
	f.Ln(2)
	f.SetFont("Helvetica", "", 10)
	for _, kv := range [][2]string{
		{"cluster", r.Cluster},
		{"backup", r.Backup + ", taken " + r.BackupTaken.UTC().Format(time.RFC3339)},
		{"revision", r.replayText()},
		{"target", r.Target},
		{"drill", r.Started.Format(time.RFC3339) + " to " + r.Finished.Format(time.RFC3339)},
		{"etcd members", fmt.Sprint(r.Members)},
		{"keys", fmt.Sprint(r.Keys)},
		{"RTO", fmt.Sprintf("%.1f s (start to healthy etcd)", r.RTOSeconds)},
		{"RPO", (time.Duration(r.RPOSeconds) * time.Second).Round(time.Second).String() + " (age of the restored data)"},
	} {
		if kv[1] == "" {
			continue
		}
		f.SetFont("Helvetica", "B", 10)
		f.CellFormat(40, 6, tr(kv[0]), "", 0, "L", false, 0, "")
		f.SetFont("Helvetica", "", 10)
		f.MultiCell(0, 6, tr(kv[1]), "", "L", false)
	}
	section := func(title string) {
		f.Ln(4)
		f.SetFont("Helvetica", "B", 13)
		f.MultiCell(0, 7, tr(title), "", "L", false)
		f.SetFont("Helvetica", "", 9)
	}
	section("Checks")
	for _, c := range r.Checks {
		f.MultiCell(0, 5, tr(fmt.Sprintf("[%s] %s  %s: %s", strings.ToUpper(string(c.Grade)), c.ID, c.Subject, c.Reason)), "", "L", false)
	}
	section("Restore steps")
	for _, s := range r.Steps {
		line := fmt.Sprintf("%s  %s  %.1f s", s.Node, s.Step, s.Seconds)
		if s.Error != "" {
			line += "  " + s.Error
		}
		f.MultiCell(0, 5, tr(line), "", "L", false)
	}
	if len(r.History) > 0 {
		section("Earlier drills")
		for _, h := range r.History {
			f.MultiCell(0, 5, tr(fmt.Sprintf("%s  backup %s  %s  RTO %.1f s  RPO %s", h.ID, h.Backup, strings.ToUpper(string(h.Result)),
				h.RTOSeconds, (time.Duration(h.RPOSeconds)*time.Second).Round(time.Second))), "", "L", false)
		}
	}
	return f.Output(w)
}
