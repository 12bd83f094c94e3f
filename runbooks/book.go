package runbooks

import (
	"errors"
	"fmt"
	"math"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kdr-io/kdr/catalog"
	"github.com/kdr-io/kdr/manifest"
	"github.com/kdr-io/kdr/restore"
)

// Paper sizes the PDF is made for.
const (
	PaperA4     = "A4"
	PaperLetter = "Letter"
)

// ExpiryWarning is how close to its expiry a certificate gets a warning
// mark: a restore brings back the certificates of the backup, and one that
// expires within weeks must be renewed soon after.
const ExpiryWarning = 30 * 24 * time.Hour

// Options shape a runbook.
type Options struct {
	// Paper is PaperA4 (default) or PaperLetter; only the PDF uses it.
	Paper string
	// Now is printed as the date the runbook was made, set as the PDF's
	// creation date, and is the time certificate expiry is counted from.
	// Default: the current time. A fixed Now makes the output reproducible.
	Now time.Time
	// At, when set, is the moment the plan's revision was picked for
	// (restore --at): the cover says which revision it is and how
	// precisely.
	At *catalog.PointInTime
}

// withDefaults fills the defaults and validates.
func (o Options) withDefaults() (Options, error) {
	switch strings.ToLower(o.Paper) {
	case "", "a4":
		o.Paper = PaperA4
	case "letter":
		o.Paper = PaperLetter
	default:
		return o, fmt.Errorf("paper %q: want %s or %s", o.Paper, PaperA4, PaperLetter)
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	return o, nil
}

// book is a runbook's content, built once from a plan so that the Markdown
// and the PDF carry the same text in the same order.
type book struct {
	cluster, backupID, generated string
	cover                        []field
	contacts                     table
	inventory                    []section
	// pointInTimeTitle and pointInTime are the section of a runbook to a
	// revision (empty otherwise), printed before the stages.
	pointInTimeTitle string
	pointInTime      []block
	stages           []stage
	breakGlass       []block
}

type field struct{ label, value string }

type table struct {
	head []string
	rows [][]string
}

// section is one titled table of the inventory, with a note printed under
// it (or instead of it when the table is empty).
type section struct {
	anchor, title string
	table         table
	note          string
}

// stage is a run of steps that every listed node finishes before the next
// stage starts.
type stage struct {
	number int
	groups []group
}

// group is the consecutive steps of one node within a stage.
type group struct {
	node, ip string
	steps    []entry
}

// entry is a plan step with its number in the plan, counted from 1.
type entry struct {
	number int
	step   restore.Step
}

// block is a paragraph of the appendix, the shell lines it explains and
// what they print when all is well (any may be empty).
type block struct {
	text   string
	code   []string
	output []string
}

// Texts shared by the two formats.
const (
	titleText      = "Restore runbook"
	inventoryTitle = "Inventory"
	breakGlassText = "Break glass: restoring without kdr"
	howToUse       = "Work through the stages in order. Each step is also what kdr restore apply --node NAME " +
		"runs on that node; tick its box when you have seen what it says to expect. A step marked " +
		"DESTRUCTIVE changes the host: never do it twice. Start a stage only when the previous stage is " +
		"done on every node."
	noContacts  = "No contacts in the backup's inventory: add inventory.contacts to the kdr config."
	warnMark    = "(!)"
	expiredMark = "EXPIRED"
)

// prepare applies the defaults to o and builds the book both formats print.
func prepare(p *restore.Plan, o Options) (*book, Options, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, o, err
	}
	b, err := newBook(p, o)
	return b, o, err
}

func newBook(p *restore.Plan, o Options) (*book, error) {
	if p == nil {
		return nil, errors.New("runbook: no plan")
	}
	if len(p.Steps) == 0 {
		return nil, errors.New("runbook: the plan has no steps")
	}
	m := p.Manifest
	if m == nil {
		// A plan decoded from JSON has no manifest; the inventory and the
		// object hashes are then unknown, but the steps still print.
		m = &manifest.Manifest{}
	}
	stages, err := stagesOf(p)
	if err != nil {
		return nil, err
	}
	b := &book{
		cluster: p.Cluster, backupID: p.BackupID, generated: stamp(o.Now),
		pointInTime: pointInTime(p), stages: stages, breakGlass: breakGlass(p, m),
	}
	if len(b.pointInTime) > 0 {
		b.pointInTimeTitle = fmt.Sprintf("Restoring to revision %d", p.ToRevision)
	}
	b.cover = []field{
		{"Cluster", p.Cluster},
		{"Backup", p.BackupID},
		{"Backup taken", stamp(p.Created)},
		{"etcd revision", revisionText(p)},
		{"Restore onto", nodeList(p)},
		{"Topology", topologyText(p.Options.Topology)},
		{"Backup location", location(p)},
		{"Runbook generated", stamp(o.Now)},
	}
	if o.At != nil {
		// Right after the revision it explains.
		b.cover = slices.Insert(b.cover, 4, field{"Point in time", o.At.String()})
	}
	b.contacts = table{head: []string{"Name", "Phone", "Email"}}
	for _, c := range m.Inventory.Contacts {
		b.contacts.rows = append(b.contacts.rows, []string{c.Name, c.Phone, c.Email})
	}
	b.inventory = inventory(p, m, o.Now)
	return b, nil
}

// stagesOf splits the plan's steps into stages by their phase; within a
// stage, consecutive steps of one node form a group.
func stagesOf(p *restore.Plan) ([]stage, error) {
	order := map[string]int{}
	ips := map[string]string{}
	for i, n := range p.Options.Nodes {
		order[n.Name] = i
		ips[n.Name] = n.IP
	}
	var stages []stage
	lastPhase, lastNode := 0, ""
	for i, s := range p.Steps {
		if _, ok := order[s.Node]; !ok {
			return nil, fmt.Errorf("runbook: step %d (%s) is for node %q, which is not among the plan's nodes (%s)",
				i+1, s.ID, s.Node, strings.Join(p.NodeNames(), ", "))
		}
		if s.Phase != lastPhase {
			stages = append(stages, stage{number: len(stages) + 1})
			lastNode = ""
		}
		st := &stages[len(stages)-1]
		if s.Node != lastNode {
			st.groups = append(st.groups, group{node: s.Node, ip: ips[s.Node]})
		}
		g := &st.groups[len(st.groups)-1]
		g.steps = append(g.steps, entry{number: i + 1, step: s})
		lastPhase, lastNode = s.Phase, s.Node
	}
	return stages, nil
}

// stageTitle names a stage and the nodes that take part in it.
func stageTitle(st stage, of int) string {
	nodes := make([]string, len(st.groups))
	for i, g := range st.groups {
		nodes[i] = g.node
	}
	return fmt.Sprintf("Stage %d of %d: %s", st.number, of, strings.Join(nodes, ", "))
}

// stageNote says when a stage may start, so that no node runs ahead.
func stageNote(st stage, of int) string {
	if st.number == 1 {
		if of == 1 {
			return "Run these steps in order."
		}
		return fmt.Sprintf("Do this stage on every node listed before starting stage %d.", st.number+1)
	}
	if st.number == of {
		return fmt.Sprintf("Start only when stage %d is done on every node.", st.number-1)
	}
	return fmt.Sprintf("Start only when stage %d is done on every node; finish this stage on every node "+
		"listed before starting stage %d.", st.number-1, st.number+1)
}

// stepHeading is how a step is named in headings and in the contents; the
// Markdown heading carries it after the checkbox, so a reader (or a test)
// finds each step's number, ID and node in one line.
func stepHeading(e entry) string {
	return fmt.Sprintf("%d. %s (%s): %s", e.number, e.step.ID, e.step.Node, e.step.Title)
}

// whereText says where a step runs and why there.
func whereText(e entry, ip string) string {
	at := e.step.Node
	if ip != "" {
		at += " (" + ip + ")"
	}
	if e.step.Where == "" {
		return at
	}
	return fmt.Sprintf("%s; this step runs on %s.", at, e.step.Where)
}

const destructiveText = "DESTRUCTIVE: this step changes the host. Do it once; kdr's journal never repeats it."

func inventory(p *restore.Plan, m *manifest.Manifest, now time.Time) []section {
	o := p.Options
	inv := m.Inventory
	var out []section

	settings := table{head: []string{"Setting", "Value"}, rows: [][]string{
		{"New etcd cluster token", o.Token},
		{"Revision bump", bumpText(p)},
		{"Initial cluster", p.InitialCluster},
		{"etcd data dir", o.EtcdDataDir},
		{"Kubernetes dir", o.KubernetesDir},
		{"Staging dir", p.Staging()},
		{"age identity file", o.IdentityFile},
		{"kdr config", o.ConfigFile},
	}}
	if m.Node != "" {
		settings.rows = append(settings.rows, []string{"Files captured on", m.Node})
	}
	out = append(out, section{anchor: "settings", title: "Restore settings", table: settings})

	nodes := table{head: []string{"Node", "IP", "Peer URL", "Client URL"}}
	for _, n := range o.Nodes {
		nodes.rows = append(nodes.rows, []string{n.Name, n.IP, n.PeerURL, n.ClientURL})
	}
	out = append(out, section{anchor: "nodes", title: "Nodes to restore onto", table: nodes,
		note: "The first node is the first etcd member; the others follow."})

	hosts := table{head: []string{"Host", "IP", "Roles"}}
	for _, h := range inv.Hosts {
		hosts.rows = append(hosts.rows, []string{h.Name, h.IP, strings.Join(h.Roles, ", ")})
	}
	out = append(out, section{anchor: "hosts", title: "Hosts at backup time", table: hosts,
		note: emptyNote(len(hosts.rows), "No hosts in the backup's inventory.")})

	api := table{head: []string{"Endpoint", "Address"}}
	if inv.APIEndpoint != "" {
		api.rows = append(api.rows, []string{"Kubernetes API", inv.APIEndpoint})
	}
	if inv.VIP != "" {
		api.rows = append(api.rows, []string{"Virtual IP (VIP)", inv.VIP})
	}
	out = append(out, section{anchor: "api", title: "API endpoint and VIP", table: api,
		note: emptyNote(len(api.rows), "No API endpoint or VIP in the backup's inventory.")})

	dns := table{head: []string{"Name", "Type", "Value"}}
	for _, r := range inv.DNS {
		dns.rows = append(dns.rows, []string{r.Name, r.Type, r.Value})
	}
	out = append(out, section{anchor: "dns", title: "DNS records", table: dns,
		note: emptyNote(len(dns.rows), "No DNS records in the backup's inventory.")})

	subnets := table{head: []string{"Subnet", "CIDR"}}
	names := make([]string, 0, len(inv.Subnets))
	for k := range inv.Subnets {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		subnets.rows = append(subnets.rows, []string{k, inv.Subnets[k]})
	}
	out = append(out, section{anchor: "subnets", title: "Subnets", table: subnets,
		note: emptyNote(len(subnets.rows), "No subnets in the backup's inventory.")})

	out = append(out, certificates(m.State.Certificates, now))
	return out
}

// certificates lists the backup's certificates, the soonest to expire
// first, counted from now.
func certificates(certs []manifest.Certificate, now time.Time) section {
	sorted := append([]manifest.Certificate(nil), certs...)
	sort.SliceStable(sorted, func(i, j int) bool {
		if !sorted[i].NotAfter.Equal(sorted[j].NotAfter) {
			return sorted[i].NotAfter.Before(sorted[j].NotAfter)
		}
		return sorted[i].Path < sorted[j].Path
	})
	t := table{head: []string{"Expires", "Days left", "Certificate", "Subject"}}
	warned := false
	for _, c := range sorted {
		left := c.NotAfter.Sub(now)
		days := strconv.Itoa(int(math.Floor(left.Hours() / 24)))
		switch {
		case left <= 0:
			days = expiredMark
			warned = true
		case left < ExpiryWarning:
			days += " " + warnMark
			warned = true
		}
		t.rows = append(t.rows, []string{c.NotAfter.UTC().Format(time.DateOnly), days, c.Path, c.Subject})
	}
	s := section{anchor: "certificates", title: "Certificate expiry", table: t}
	switch {
	case len(t.rows) == 0:
		s.note = "The backup recorded no certificates."
	case warned:
		s.note = fmt.Sprintf("%s marks a certificate that expires within %d days of %s, %s one that has expired: "+
			"renew it right after the restore, or the restored cluster stops trusting it.",
			warnMark, int(ExpiryWarning.Hours()/24), stamp(now), expiredMark)
	default:
		s.note = fmt.Sprintf("Days are counted from %s.", stamp(now))
	}
	return s
}

func emptyNote(rows int, note string) string {
	if rows == 0 {
		return note
	}
	return ""
}

// breakGlass is the appendix: the restore by hand with only age, zstd, tar
// and etcdutl (docs/format.md, "Break glass"), filled in with this plan's
// values.
func breakGlass(p *restore.Plan, m *manifest.Manifest) []block {
	o := p.Options
	staging := p.Staging()
	out := []block{{
		text: "If kdr itself cannot run, the same restore can be done by hand with only age, zstd, tar and " +
			"etcdutl. The values below are this plan's; the steps above say the same with kdr.",
	}}
	if lost := lostText(p); lost != "" {
		out[0].text = fmt.Sprintf("If kdr itself cannot run, the full set alone can be restored by hand with only age, zstd, "+
			"tar and etcdutl: the cluster as it was at revision %d, when the set was taken (%s). Replaying the captured "+
			"log to revision %d needs kdr, and without it %s. The values below are this plan's; the commands restore "+
			"the set as it is, with the bump still past the log's end.", p.Revision, stamp(p.Created), p.ToRevision, lost)
	}
	fetch := block{
		text: "1. On every node, copy the backup set into the staging directory and check it. The set is " +
			location(p) + ".",
		code: []string{"mkdir -p " + staging + " && cd " + staging, "sha256sum " + manifest.EtcdObject + " " + manifest.StateObject},
	}
	for _, name := range []string{manifest.EtcdObject, manifest.StateObject} {
		if obj, ok := m.Object(name); ok {
			fetch.output = append(fetch.output, obj.SHA256+"  "+name)
		}
	}
	if len(fetch.output) > 0 {
		fetch.text += " sha256sum must print what follows the commands."
	}
	if o.AllowedSigners != "" {
		// The hashes above are only as good as the manifest that holds
		// them: a set someone else wrote must not pass for ours.
		fetch.text += " First check that a trusted key signed the manifest: ssh-keygen must print Good \"" +
			manifest.NamespaceManifest + "\" signature."
		code := []string{"cat > allowed_signers <<'EOF'"}
		code = append(code, strings.Split(strings.TrimSpace(o.AllowedSigners), "\n")...)
		code = append(code, "EOF", "ssh-keygen -Y verify -f allowed_signers -I "+manifest.SignaturePrincipal+" -n "+
			manifest.NamespaceManifest+" -s "+manifest.SignatureKey(manifest.ManifestObject)+" < "+manifest.ManifestObject)
		fetch.code = append(code, fetch.code[1:]...)
		fetch.code = append([]string{"mkdir -p " + staging + " && cd " + staging}, fetch.code...)
	}
	out = append(out, fetch)

	decrypt := block{
		text: "2. Decrypt and decompress; the state's files land under " + path.Join(staging, "state") +
			", their paths relative to /. Copy them into place, moving aside whatever is there.",
		code: []string{
			"cd " + staging,
			"age -d -i " + o.IdentityFile + " " + manifest.EtcdObject + " | zstd -d -o snapshot.db",
			"mkdir -p " + path.Join(staging, "state"),
			"age -d -i " + o.IdentityFile + " " + manifest.StateObject + " | zstd -d | tar -x -p -C " + path.Join(staging, "state"),
			"sha256sum snapshot.db",
		},
	}
	if obj, ok := m.Object(manifest.EtcdObject); ok {
		decrypt.text += " sha256sum must print what follows the commands."
		decrypt.output = []string{obj.PlainSHA256 + "  snapshot.db"}
	}
	out = append(out, decrypt)

	// A replay needs kdr: by hand, the set alone is restored.
	set, err := p.SetOnly()
	if err != nil {
		set = p
	}
	for i, n := range o.Nodes {
		out = append(out, block{
			text: fmt.Sprintf("%d. On %s (%s): restore its etcd member. Every member comes from the same "+
				"snapshot with the same token; the old data dir is moved aside, never deleted.", i+3, n.Name, n.IP),
			code: stepCommands(set, n.Name, restore.StepMoveAside, restore.StepRestoreEtcd),
		})
	}
	out = append(out, block{
		text: fmt.Sprintf("%d. Start etcd on every node, then kube-apiserver, kube-controller-manager and "+
			"kube-scheduler, then restart every kubelet. --bump-revision --mark-compacted keep revisions moving "+
			"forward, so Kubernetes watch caches and informers do not silently miss updates.", len(o.Nodes)+3),
	})
	return out
}

// pointInTime is the section of a runbook to a revision: how the
// revision is picked, the plan's steps that reach it in the order they
// run, and what the full set alone restores without kdr and what is then
// lost. Empty for a plan that restores a set as it is.
func pointInTime(p *restore.Plan) []block {
	r := p.Replay
	if p.ToRevision == 0 || r == nil {
		return nil
	}
	o := p.Options
	kdr := "kdr --config " + o.ConfigFile
	which := " --cluster " + p.Cluster
	if o.Target != "" {
		which += " --target " + o.Target
	}
	intro := fmt.Sprintf("This runbook brings etcd back as it was at revision %d, which is the backup's own revision: "+
		"nothing is replayed.", p.ToRevision)
	if len(r.Segments) > 0 {
		intro = fmt.Sprintf("This runbook brings etcd back as it was at revision %d, not as backup %s took it: the full "+
			"set at revision %d (taken %s), then %d segment(s) of its captured log replayed, revisions %d..%d, %s. "+
			"The steps below say how, in the order they are done.",
			p.ToRevision, p.BackupID, p.Revision, stamp(p.Created), len(r.Segments), p.Revision+1, p.ToRevision, replaySpan(p))
	}
	out := []block{{text: intro}, {
		text: "1. Pick the revision, before anything changes. kdr history <key> lists every change of a key (of every " +
			"key under it when it ends in /) that the captured log holds, with its revision and when it was seen; " +
			"--at <RFC3339 time> takes the last revision seen at or before that moment. Both read the encrypted log " +
			"and need the age identity. When the revision is not " + strconv.FormatInt(p.ToRevision, 10) +
			", print the runbook of the right one and follow that instead.",
		code: []string{
			kdr + " history <key>" + which + " --identity " + o.IdentityFile,
			kdr + " restore plan" + which + " --at <RFC3339 time> --identity " + o.IdentityFile,
			kdr + " runbook --format pdf --out runbook.pdf" + which + " --revision <revision>",
		},
	}}
	replay := "kdr replays nothing: the set is at revision " + strconv.FormatInt(p.ToRevision, 10) +
		" already, and kdr checks that its snapshot holds no later revision"
	if len(r.Segments) > 0 {
		replay = fmt.Sprintf("kdr replays revisions %d..%d into %s, a copy of the decrypted snapshot", p.Revision+1,
			p.ToRevision, path.Base(p.RestoredDB()))
		if r.Proof != nil {
			replay += fmt.Sprintf(", and proves it against the HashKV recorded at revision %d", r.Proof.Revision)
		}
	}
	out = append(out, block{
		text: fmt.Sprintf("2. On every node, in stage 1: fetch (%s) copies the set and the %d segment bodies, each held "+
			"to the head a trusted key signed when the plan was made; decrypt (%s) decrypts the set; replay (%s): %s. "+
			"Replaying needs kdr: kdr restore apply with --until replay runs the node's steps up to it.",
			stepNumbers(p, restore.StepFetch), len(r.Segments), stepNumbers(p, restore.StepDecrypt),
			stepNumbers(p, restore.StepReplay), replay),
	}, block{
		text: fmt.Sprintf("3. Then as for any restore: restore-etcd (%s) restores %s, and the revision bump is counted "+
			"from the captured log's end, revision %d, so the restored etcd starts at or above %d, past every "+
			"revision the lost cluster is known to have handed out; start-etcd, check-etcd and start-control-plane "+
			"follow.", stepNumbers(p, restore.StepRestoreEtcd), path.Base(p.RestoredDB()), max(p.LogEnd, p.ToRevision),
			p.MinRevision()),
	})
	glass := "4. Without kdr (break glass, at the end): etcdutl snapshot restore of the decrypted snapshot brings " +
		"the cluster back as it was at revision " + strconv.FormatInt(p.Revision, 10) + ", when the set was taken (" +
		stamp(p.Created) + ")"
	if lost := lostText(p); lost != "" {
		glass += "; " + lost
	}
	return append(out, block{text: glass + "."})
}

// replaySpan says when the revisions a plan replays were seen: from its
// first segment's first to the end of the segment holding the plan's
// revision, which bounds that revision's time when it is not the
// segment's last.
func replaySpan(p *restore.Plan) string {
	segs := p.Replay.Segments
	first, last := segs[0].Head, segs[len(segs)-1].Head
	span := fmt.Sprintf("seen from %s to %s", stamp(first.SeenFirst), stamp(last.SeenLast))
	if last.Last != p.ToRevision {
		span += " at the latest"
	}
	return span
}

// lostText says what a restore of the set alone loses of a plan to a
// revision: every revision captured after the set's, those the plan
// replays and any the log holds after them. Empty when the plan replays
// nothing.
func lostText(p *restore.Plan) string {
	if p.ToRevision == 0 || p.Replay == nil || len(p.Replay.Segments) == 0 {
		return ""
	}
	lost := fmt.Sprintf("every revision captured after revision %d is lost: %d..%d, which this plan replays, %s",
		p.Revision, p.Revision+1, p.ToRevision, replaySpan(p))
	if p.LogEnd > p.ToRevision {
		lost += fmt.Sprintf(", and %d..%d after them", p.ToRevision+1, p.LogEnd)
	}
	return lost
}

// stepNumbers lists the numbers in the plan of the steps with an ID, as
// the headings number them.
func stepNumbers(p *restore.Plan, id string) string {
	var nums []string
	for i, s := range p.Steps {
		if s.ID == id {
			nums = append(nums, strconv.Itoa(i+1))
		}
	}
	if len(nums) == 1 {
		return "step " + nums[0]
	}
	return "steps " + strings.Join(nums, ", ")
}

// stepCommands are the commands of a node's steps of the plan, in
// order: break glass types what the engine's steps would do.
func stepCommands(p *restore.Plan, node string, ids ...string) []string {
	var out []string
	for _, s := range p.Steps {
		if s.Node == node && slices.Contains(ids, s.ID) {
			out = append(out, s.Commands...)
		}
	}
	return out
}

// location says where the set lives, for a person copying it by hand.
func location(p *restore.Plan) string {
	set := manifest.SetPrefix(p.Cluster, p.BackupID)
	s := p.Source
	switch s.Kind {
	case "s3":
		scheme := "https"
		if s.Insecure {
			scheme = "http"
		}
		return fmt.Sprintf("s3://%s/%s on %s://%s", s.Bucket, strings.TrimPrefix(path.Join(s.Prefix, set)+"/", "/"), scheme, s.Endpoint)
	case "local":
		return path.Join(s.Path, set) + "/"
	}
	if p.Options.Target != "" {
		return set + " on target " + p.Options.Target
	}
	return set
}

func nodeList(p *restore.Plan) string {
	parts := make([]string, len(p.Options.Nodes))
	for i, n := range p.Options.Nodes {
		parts[i] = n.Name + " (" + n.IP + ")"
	}
	return strings.Join(parts, ", ")
}

func topologyText(t string) string {
	switch t {
	case restore.TopologyKubeadm:
		return "kubeadm: stacked etcd in static pods"
	case restore.TopologySystemd:
		return "external etcd under systemd"
	}
	return t
}

// bumped is the lowest revision the restored cluster can have: the
// database holds at least the recorded (or replayed) revision, and the
// restore adds the bump to whatever it holds.
func bumped(p *restore.Plan) string {
	bump := p.Bump()
	rev := p.RestoredRevision()
	if rev < 0 {
		return strconv.FormatUint(bump, 10)
	}
	sum := uint64(rev) + bump
	if sum < bump {
		return "the maximum revision"
	}
	return strconv.FormatUint(sum, 10)
}

// revisionText is the cover's etcd revision: the set's, or the one the
// log is replayed to and how.
func revisionText(p *restore.Plan) string {
	r := p.Replay
	if p.ToRevision == 0 || r == nil {
		return fmt.Sprintf("%d; after the restore at least %s", p.Revision, bumped(p))
	}
	log := "no segment of the captured log (the set is at that revision)"
	if n := len(r.Segments); n > 0 {
		log = fmt.Sprintf("%d segment(s) of the captured log (%d..%d)", n, p.Revision+1, p.ToRevision)
	}
	return fmt.Sprintf("%d: the full set at %d + %s; after the restore at least %s", p.ToRevision, p.Revision, log, bumped(p))
}

// bumpText is the revision bump of the settings, and why it is more than
// the one asked for when the captured log goes on past the restored
// revision.
func bumpText(p *restore.Plan) string {
	b := p.Bump()
	if b == p.Options.RevisionBump {
		return strconv.FormatUint(b, 10)
	}
	return fmt.Sprintf("%d (%d past the captured log's end, revision %d)", b, p.Options.RevisionBump, p.LogEnd)
}

// stamp prints a time in UTC, as everyone on a call reads the same clock.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "unknown"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}
