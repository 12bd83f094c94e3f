package runbooks

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"strconv"
	"strings"

	"github.com/go-pdf/fpdf"

	"github.com/kdr-io/kdr/restore"
)

// Layout, in millimetres and points. Text is black on white and meaning
// never rests on colour: destructive steps, headers and warnings are told
// apart by bold type, boxes and words, so a black-and-white print or copy
// loses nothing.
const (
	margin       = 18.0
	bottomMargin = 20.0
	footerGap    = 13.0 // from the bottom edge to the footer rule

	bodyFont, codeFont = "Helvetica", "Courier"
	bodySize, bodyLine = 9.5, 4.6
	smallSize          = 8.0
	codeSize, codeLine = 8.5, 4.0
	stepSize, stepLine = 10.5, 5.2

	cellPad   = 1.5 // inside table cells, left and right
	cellPadY  = 1.0 // inside table cells, top and bottom
	labelW    = 20.0
	stepInset = 7.0 // steps' text starts right of the checkbox
	boxSize   = 3.8
	tocNumW   = 12.0
)

// maxPasses bounds the layout passes: the first learns the page numbers,
// the next prints them; the contents have one line per entry whatever the
// numbers, so the second pass settles and the rest is a safety margin.
const maxPasses = 4

// PDF writes the runbook of p to w as a PDF on o.Paper.
func PDF(w io.Writer, p *restore.Plan, o Options) error {
	b, o, err := prepare(p, o)
	if err != nil {
		return err
	}
	// The contents and the footers need page numbers that are known only
	// once the document is laid out, so it is laid out again with the
	// numbers of the previous pass until they stop changing.
	var known pageNumbers
	var doc *fpdf.Fpdf
	for pass := 0; pass < maxPasses; pass++ {
		r := newPDFDoc(b, o, known)
		seen, err := r.render()
		if err != nil {
			return err
		}
		doc = r.f
		if pass > 0 && seen.equal(known) {
			break
		}
		known = seen
	}
	var out bytes.Buffer
	if err := doc.Output(&out); err != nil {
		return fmt.Errorf("render PDF: %w", err)
	}
	if _, err := w.Write(out.Bytes()); err != nil {
		return fmt.Errorf("write runbook: %w", err)
	}
	return nil
}

// pageNumbers is what a layout pass learns: the page of each anchor and
// the number of pages.
type pageNumbers struct {
	total   int
	anchors map[string]int
}

func (a pageNumbers) equal(b pageNumbers) bool {
	return a.total == b.total && maps.Equal(a.anchors, b.anchors)
}

// pdfDoc is one layout pass.
type pdfDoc struct {
	f     *fpdf.Fpdf
	b     *book
	known pageNumbers
	seen  pageNumbers
	links map[string]int
	// Page geometry.
	pageW, pageH, bodyW float64
}

func newPDFDoc(b *book, o Options, known pageNumbers) *pdfDoc {
	f := fpdf.New("P", "mm", o.Paper, "")
	// Reproducible output: fixed dates and a fixed order of the
	// document's catalogs.
	f.SetCreationDate(o.Now.UTC())
	f.SetModificationDate(o.Now.UTC())
	f.SetCatalogSort(true)
	f.SetTitle(titleText+": "+b.cluster+", backup "+b.backupID, true)
	f.SetCreator("kdr", false)
	f.SetMargins(margin, margin, margin)
	// Page breaks are decided here, so that a command never straddles two
	// pages; fpdf's own breaks would split it anywhere.
	f.SetAutoPageBreak(false, bottomMargin)
	f.SetCellMargin(0)
	f.SetTextColor(0, 0, 0)
	f.SetDrawColor(0, 0, 0)
	w, h := f.GetPageSize()
	d := &pdfDoc{f: f, b: b, known: known, seen: pageNumbers{anchors: map[string]int{}},
		links: map[string]int{}, pageW: w, pageH: h, bodyW: w - 2*margin}
	f.SetFooterFunc(d.footer)
	return d
}

func (d *pdfDoc) render() (pageNumbers, error) {
	d.cover()
	d.contents()
	d.inventory()
	if d.b.pointInTimeTitle != "" {
		d.f.AddPage()
		d.heading(0, d.b.pointInTimeTitle, pointInTimeKey, 20)
		d.blocks(d.b.pointInTime)
	}
	for _, st := range d.b.stages {
		d.stage(st)
	}
	d.breakGlass()
	d.seen.total = d.f.PageNo()
	d.f.Close()
	if err := d.f.Error(); err != nil {
		return pageNumbers{}, fmt.Errorf("render PDF: %w", err)
	}
	return d.seen, nil
}

func (d *pdfDoc) footer() {
	f := d.f
	y := d.pageH - footerGap
	f.SetLineWidth(0.2)
	f.Line(margin, y, d.pageW-margin, y)
	f.SetFont(bodyFont, "", smallSize)
	total := "?"
	if d.known.total > 0 {
		total = strconv.Itoa(d.known.total)
	}
	right := fmt.Sprintf("page %d of %s", f.PageNo(), total)
	rightW := f.GetStringWidth(right) + 2
	f.SetXY(margin, y+1.5)
	f.CellFormat(d.bodyW-rightW, 4, winAnsi(fmt.Sprintf("%s: %s, backup %s, generated %s",
		titleText, d.b.cluster, d.b.backupID, d.b.generated)), "", 0, "L", false, 0, "")
	f.CellFormat(rightW, 4, right, "", 0, "R", false, 0, "")
}

// link returns the internal link of an anchor, made on first use so that
// the contents can point at anchors placed later.
func (d *pdfDoc) link(key string) int {
	id, ok := d.links[key]
	if !ok {
		id = d.f.AddLink()
		d.links[key] = id
	}
	return id
}

// anchor marks the current position as key's target, in the contents and
// in the viewer's outline.
func (d *pdfDoc) anchor(key string, level int, title string) {
	f := d.f
	d.seen.anchors[key] = f.PageNo()
	f.SetLink(d.link(key), f.GetY(), f.PageNo())
	f.Bookmark(winAnsi(title), level, -1)
}

// room is the height left on the page above the bottom margin.
func (d *pdfDoc) room() float64 { return d.pageH - bottomMargin - d.f.GetY() }

// bodyH is the height of a whole page's body.
func (d *pdfDoc) bodyH() float64 { return d.pageH - bottomMargin - margin }

// need starts a new page unless h fits on this one. What is taller than a
// page starts on a fresh page and then flows.
func (d *pdfDoc) need(h float64) {
	if h > d.bodyH() {
		h = d.bodyH()
	}
	if d.room() < h {
		d.f.AddPage()
	}
}

// lines wraps text to width in the current font.
func (d *pdfDoc) lines(text string, width float64) []string {
	raw := d.f.SplitLines([]byte(winAnsi(text)), width)
	if len(raw) == 0 {
		return []string{""}
	}
	out := make([]string, len(raw))
	for i, l := range raw {
		out[i] = string(l)
	}
	return out
}

// put prints already wrapped and encoded lines at x, breaking pages
// between lines.
func (d *pdfDoc) put(x, width, lh float64, lines []string) {
	f := d.f
	for _, l := range lines {
		d.need(lh)
		f.SetX(x)
		f.CellFormat(width, lh, l, "", 1, "L", false, 0, "")
	}
}

// para prints a wrapped paragraph across the body, indented by indent.
func (d *pdfDoc) para(text, style string, size, lh, indent float64) {
	d.f.SetFont(bodyFont, style, size)
	w := d.bodyW - indent
	d.put(margin+indent, w, lh, d.lines(text, w))
}

func (d *pdfDoc) gap(h float64) {
	if d.room() > h {
		d.f.Ln(h)
	}
}

// heading prints a section heading (level 0) or a sub-heading (level 1),
// kept on a page with at least follow millimetres of what comes after it.
func (d *pdfDoc) heading(level int, text, key string, follow float64) {
	f := d.f
	size, lh := 16.0, 8.0
	if level > 0 {
		size, lh = 12.0, 6.0
	}
	f.SetFont(bodyFont, "B", size)
	lines := d.lines(text, d.bodyW)
	d.need(float64(len(lines))*lh + 3 + follow)
	if key != "" {
		d.anchor(key, level, text)
	}
	d.put(margin, d.bodyW, lh, lines)
	if level == 0 {
		f.SetLineWidth(0.5)
		f.Line(margin, f.GetY()+0.5, d.pageW-margin, f.GetY()+0.5)
	}
	f.Ln(3)
}

func (d *pdfDoc) cover() {
	f := d.f
	f.AddPage()
	f.SetY(margin + 12)
	d.para(titleText, "B", 26, 12, 0)
	d.para(d.b.cluster, "B", 18, 9, 0)
	f.Ln(6)
	rows := make([][]string, len(d.b.cover))
	for i, c := range d.b.cover {
		rows[i] = []string{c.label, c.value}
	}
	d.table(table{rows: rows}, true)
	f.Ln(8)
	d.heading(1, "Who to call", "", 20)
	if len(d.b.contacts.rows) == 0 {
		d.para(noContacts, "", bodySize, bodyLine, 0)
	} else {
		d.table(d.b.contacts, false)
	}
	f.Ln(8)
	d.para(howToUse, "", bodySize, bodyLine, 0)
}

// tocEntry is one line of the contents.
type tocEntry struct {
	level int
	key   string
	text  string
}

func (d *pdfDoc) toc() []tocEntry {
	out := []tocEntry{{0, "inventory", inventoryTitle}}
	for _, s := range d.b.inventory {
		out = append(out, tocEntry{1, "inv:" + s.anchor, s.title})
	}
	if d.b.pointInTimeTitle != "" {
		out = append(out, tocEntry{0, pointInTimeKey, d.b.pointInTimeTitle})
	}
	for _, st := range d.b.stages {
		out = append(out, tocEntry{0, stageKey(st), stageTitle(st, len(d.b.stages))})
		for _, g := range st.groups {
			for _, e := range g.steps {
				out = append(out, tocEntry{1, stepKey(e), stepHeading(e)})
			}
		}
	}
	return append(out, tocEntry{0, "appendix", breakGlassText})
}

// pointInTimeKey is the anchor of the section of a runbook to a revision.
const pointInTimeKey = "point-in-time"

func stageKey(st stage) string { return "stage:" + strconv.Itoa(st.number) }
func stepKey(e entry) string   { return "step:" + strconv.Itoa(e.number) }

func (d *pdfDoc) contents() {
	f := d.f
	f.AddPage()
	d.heading(0, "Contents", "", 10)
	for _, e := range d.toc() {
		indent, style, size, lh := 0.0, "B", bodySize, 5.6
		if e.level > 0 {
			indent, style, size, lh = 6, "", bodySize-0.5, 4.6
		}
		f.SetFont(bodyFont, style, size)
		textW := d.bodyW - indent - tocNumW - 2
		lines := d.lines(e.text, textW)
		h := float64(len(lines)) * lh
		d.need(h)
		top := f.GetY()
		d.put(margin+indent, textW, lh, lines)
		// Dot leaders from the end of the last line to the page number
		// guide the eye along a printed line.
		last := lines[len(lines)-1]
		dotsFrom := margin + indent + f.GetStringWidth(last) + 1
		dotsTo := d.pageW - margin - tocNumW
		if dots := int((dotsTo - dotsFrom) / f.GetStringWidth(".")); dots > 0 {
			f.SetXY(dotsFrom, top+h-lh)
			f.CellFormat(dotsTo-dotsFrom, lh, strings.Repeat(".", dots), "", 0, "R", false, 0, "")
		}
		page := ""
		if n, ok := d.known.anchors[e.key]; ok {
			page = strconv.Itoa(n)
		}
		f.SetXY(dotsTo, top+h-lh)
		f.CellFormat(tocNumW, lh, page, "", 1, "R", false, 0, "")
		f.Link(margin+indent, top, d.bodyW-indent, h, d.link(e.key))
	}
}

func (d *pdfDoc) inventory() {
	d.f.AddPage()
	d.heading(0, inventoryTitle, "inventory", 20)
	for _, s := range d.b.inventory {
		d.heading(1, s.title, "inv:"+s.anchor, 15)
		if len(s.table.rows) > 0 {
			d.table(s.table, false)
			d.f.Ln(1.5)
		}
		if s.note != "" {
			d.para(s.note, "", smallSize+0.5, 4, 0)
		}
		d.gap(5)
	}
}

func (d *pdfDoc) stage(st stage) {
	d.f.AddPage()
	d.heading(0, stageTitle(st, len(d.b.stages)), stageKey(st), 30)
	d.para(stageNote(st, len(d.b.stages)), "", bodySize, bodyLine, 0)
	d.gap(4)
	for _, g := range st.groups {
		// A node's heading stays on the page of its first step.
		first := d.layoutStep(g.steps[0], g.ip)
		d.heading(1, g.node+" ("+g.ip+")", "", first.height)
		for _, e := range g.steps {
			d.step(d.layoutStep(e, g.ip))
		}
	}
}

// stepLayout is a step wrapped to the page, ready to print.
type stepLayout struct {
	e                  entry
	head, warn         []string
	where, why, expect []string
	cmds               [][]string
	height             float64
}

func (d *pdfDoc) layoutStep(e entry, ip string) stepLayout {
	f := d.f
	s := e.step
	textW := d.bodyW - stepInset
	l := stepLayout{e: e}
	f.SetFont(bodyFont, "B", stepSize)
	l.head = d.lines(stepHeading(e), textW)
	if s.Destructive {
		f.SetFont(bodyFont, "B", bodySize)
		l.warn = d.lines(destructiveText, textW-2*cellPad)
	}
	l.where, l.why, l.expect = d.defLines(whereText(e, ip), textW), d.defLines(s.Why, textW), d.defLines(s.Expect, textW)
	l.cmds = d.commandLines(s.Commands, textW-3)
	l.height = float64(len(l.head))*stepLine + 2 + float64(len(l.where)+len(l.why)+len(l.expect))*bodyLine + 6
	if len(l.warn) > 0 {
		l.height += float64(len(l.warn))*bodyLine + 2*cellPadY + 2
	}
	for _, c := range l.cmds {
		l.height += float64(len(c))*codeLine + 1
	}
	return l
}

// step prints one step: checkbox and heading, the destructive warning,
// where and why, the commands and what to expect. A step that fits on a
// page is never split over two.
func (d *pdfDoc) step(l stepLayout) {
	f := d.f
	textW := d.bodyW - stepInset
	d.need(l.height)
	top := f.GetY()
	d.anchor(stepKey(l.e), 1, stepHeading(l.e))
	f.SetLineWidth(0.35)
	f.Rect(margin+0.2, top+(stepLine-boxSize)/2, boxSize, boxSize, "D")
	f.SetFont(bodyFont, "B", stepSize)
	d.put(margin+stepInset, textW, stepLine, l.head)
	f.Ln(1)
	x := margin + stepInset
	if len(l.warn) > 0 {
		// A framed, bold warning reads the same in black and white.
		bh := float64(len(l.warn))*bodyLine + 2*cellPadY
		d.need(bh)
		y := f.GetY()
		f.SetLineWidth(0.6)
		f.Rect(x, y, textW, bh, "D")
		f.SetFont(bodyFont, "B", bodySize)
		f.SetY(y + cellPadY)
		d.put(x+cellPad, textW-2*cellPad, bodyLine, l.warn)
		f.SetY(y + bh + 1.5)
	}
	d.def("Runs on", l.where)
	d.def("Why", l.why)
	f.Ln(1)
	for _, c := range l.cmds {
		d.code(x, c)
		f.Ln(1)
	}
	d.def("Expect", l.expect)
	d.gap(5)
}

// defLines wraps the text of a labelled paragraph.
func (d *pdfDoc) defLines(text string, width float64) []string {
	d.f.SetFont(bodyFont, "", bodySize)
	return d.lines(text, width-labelW)
}

// def prints a label and its wrapped text beside it.
func (d *pdfDoc) def(label string, lines []string) {
	f := d.f
	d.need(bodyLine)
	f.SetFont(bodyFont, "B", bodySize)
	f.SetX(margin + stepInset)
	f.CellFormat(labelW, bodyLine, label, "", 0, "L", false, 0, "")
	f.SetFont(bodyFont, "", bodySize)
	d.put(margin+stepInset+labelW, d.bodyW-stepInset-labelW, bodyLine, lines)
}

// commandLines wraps each command to the width of a code block.
func (d *pdfDoc) commandLines(cmds []string, width float64) [][]string {
	d.f.SetFont(codeFont, "", codeSize)
	cols := int(width / d.f.GetStringWidth("0"))
	out := make([][]string, len(cmds))
	for i, c := range cmds {
		out[i] = wrapShell(winAnsi(c), cols)
	}
	return out
}

// code prints one command's lines in monospace with a rule on their left,
// all on one page when they fit, so that a command is read (and typed)
// from one place.
func (d *pdfDoc) code(x float64, lines []string) {
	f := d.f
	d.need(float64(len(lines)) * codeLine)
	f.SetFont(codeFont, "", codeSize)
	f.SetLineWidth(0.6)
	for _, l := range lines {
		d.need(codeLine)
		y := f.GetY()
		f.Line(x+0.3, y, x+0.3, y+codeLine)
		f.SetX(x + 3)
		f.CellFormat(d.pageW-margin-x-3, codeLine, l, "", 1, "L", false, 0, "")
	}
}

func (d *pdfDoc) breakGlass() {
	d.f.AddPage()
	d.heading(0, breakGlassText, "appendix", 20)
	d.blocks(d.b.breakGlass)
}

// blocks prints paragraphs with the commands they explain and what those
// print.
func (d *pdfDoc) blocks(blocks []block) {
	f := d.f
	x := margin
	width := d.bodyW - 3
	for _, bl := range blocks {
		if bl.text != "" {
			d.para(bl.text, "", bodySize, bodyLine, 0)
			f.Ln(1.5)
		}
		for _, c := range d.commandLines(bl.code, width) {
			d.code(x, c)
		}
		if len(bl.output) > 0 {
			f.Ln(1)
			f.SetFont(codeFont, "", codeSize)
			cols := int(width / f.GetStringWidth("0"))
			for _, o := range bl.output {
				d.put(x+3, width, codeLine, chunk(winAnsi(o), cols))
			}
		}
		d.gap(4)
	}
}

// table prints a bordered table across the body, wrapping cells and
// repeating the header row on each new page. A table without a header
// prints its first column in bold, as labels.
func (d *pdfDoc) table(t table, boldFirst bool) {
	widths := d.columnWidths(t, boldFirst)
	if len(t.head) > 0 {
		lines, h := d.rowLines(t.head, widths, true, false)
		d.need(h)
		d.drawRow(lines, widths, h, true, false)
	}
	for _, r := range t.rows {
		lines, h := d.rowLines(r, widths, false, boldFirst)
		if d.room() < h {
			d.f.AddPage()
			if len(t.head) > 0 {
				hl, hh := d.rowLines(t.head, widths, true, false)
				d.drawRow(hl, widths, hh, true, false)
			}
		}
		d.drawRow(lines, widths, h, false, boldFirst)
	}
}

// rowLines wraps each cell of a row to its column and says how tall the
// row is.
func (d *pdfDoc) rowLines(cells []string, widths []float64, header, boldFirst bool) ([][]string, float64) {
	lines := make([][]string, len(widths))
	n := 1
	for i := range widths {
		d.f.SetFont(bodyFont, cellStyle(i, header, boldFirst), bodySize)
		cell := ""
		if i < len(cells) {
			cell = cells[i]
		}
		lines[i] = d.lines(cell, widths[i]-2*cellPad)
		n = max(n, len(lines[i]))
	}
	return lines, float64(n)*bodyLine + 2*cellPadY
}

func cellStyle(col int, header, boldFirst bool) string {
	if header || (boldFirst && col == 0) {
		return "B"
	}
	return ""
}

func (d *pdfDoc) drawRow(lines [][]string, widths []float64, h float64, header, boldFirst bool) {
	f := d.f
	y := f.GetY()
	x := margin
	// The header row has a heavier frame instead of a shaded background.
	lw := 0.2
	if header {
		lw = 0.5
	}
	for i, w := range widths {
		f.SetLineWidth(lw)
		f.Rect(x, y, w, h, "D")
		f.SetFont(bodyFont, cellStyle(i, header, boldFirst), bodySize)
		for j, l := range lines[i] {
			f.SetXY(x+cellPad, y+cellPadY+float64(j)*bodyLine)
			f.CellFormat(w-2*cellPad, bodyLine, l, "", 0, "L", false, 0, "")
		}
		x += w
	}
	f.SetXY(margin, y+h)
}

// columnWidths gives each column its natural width when the table fits
// the body; otherwise narrow columns keep theirs and the wide ones share
// what is left in proportion to their natural width, wrapping their text.
func (d *pdfDoc) columnWidths(t table, boldFirst bool) []float64 {
	f := d.f
	n := len(t.head)
	for _, r := range t.rows {
		n = max(n, len(r))
	}
	if n == 0 {
		return nil
	}
	natural := make([]float64, n)
	measure := func(cells []string, bold bool) {
		for i, c := range cells {
			f.SetFont(bodyFont, cellStyle(i, bold, boldFirst), bodySize)
			natural[i] = max(natural[i], f.GetStringWidth(winAnsi(c))+2*cellPad+0.5)
		}
	}
	measure(t.head, true)
	for _, r := range t.rows {
		measure(r, false)
	}
	total := 0.0
	for _, w := range natural {
		total += w
	}
	widths := make([]float64, n)
	if total <= d.bodyW {
		copy(widths, natural)
		widths[n-1] += d.bodyW - total
		return widths
	}
	fair := d.bodyW / float64(n)
	free, wide := d.bodyW, 0.0
	for i, w := range natural {
		if w <= fair {
			widths[i] = w
			free -= w
		} else {
			wide += w
		}
	}
	for i, w := range natural {
		if w > fair {
			widths[i] = free * w / wide
		}
	}
	return widths
}

// wrapShell breaks a shell command into lines of at most cols columns,
// the first after a "$ " prompt, each broken line ending in a backslash.
// Backslash-newline is a shell line continuation, so the lines typed as
// printed are the command. A break goes at a space outside quotes when
// there is one (the line ends in " \" and the next is indented), else
// inside a word at a place outside single quotes, where backslash-newline
// would be literal; the rest of the word then starts its line in the first
// column, as indenting it would put spaces into the word. Nothing is ever
// cut off.
func wrapShell(cmd string, cols int) []string {
	const prompt, indent = "$ ", "  "
	cols = max(cols, 16)
	var out []string
	for i, line := range strings.Split(cmd, "\n") {
		lead := prompt
		if i > 0 {
			lead = indent
		}
		single, breakable := shellScan(line)
		start := 0
		for {
			room := cols - len(lead)
			if len(line)-start <= room {
				out = append(out, lead+line[start:])
				break
			}
			cut, next, cont, nextLead := -1, -1, "\\", ""
			// At a space: the line keeps the text before it and " \".
			for k := min(start+room-2, len(line)-1); k > start; k-- {
				if breakable[k] {
					cut, next, cont, nextLead = k, k+1, " \\", indent
					break
				}
			}
			// Inside a word: the line holds room-1 bytes and "\".
			if cut < 0 {
				for c := start + room - 1; c > start; c-- {
					if !single[c] && line[c-1] != '\\' {
						cut, next = c, c
						break
					}
				}
			}
			reopen := ""
			if cut < 0 {
				cut, next = start+room-2, start+room-2
				if single[cut] {
					// Inside single quotes: close them before the
					// continuation and open them again after it; the
					// shell joins the two quoted parts into one word.
					cont, reopen = "'\\", "'"
				}
			}
			if nextLead == indent {
				for next < len(line) && breakable[next] {
					next++
				}
			}
			out = append(out, lead+line[start:cut]+cont)
			start = next
			lead = nextLead + reopen
		}
	}
	return out
}

// shellScan reports for each byte of a command line whether it lies
// inside single quotes (the state before the byte) and whether it is a
// space that separates words (outside quotes, not escaped).
func shellScan(line string) (single, breakable []bool) {
	single = make([]bool, len(line)+1)
	breakable = make([]bool, len(line))
	var quote byte
	escaped := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		single[i] = quote == '\''
		switch {
		case escaped:
			escaped = false
		case quote == '\'':
			if c == '\'' {
				quote = 0
			}
		case c == '\\':
			escaped = true
		case quote == '"':
			if c == '"' {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == ' ':
			breakable[i] = true
		}
	}
	single[len(line)] = quote == '\''
	return single, breakable
}

// chunk breaks text that is not a command (printed output) into lines of
// at most cols columns.
func chunk(s string, cols int) []string {
	cols = max(cols, 1)
	var out []string
	for len(s) > cols {
		out = append(out, s[:cols])
		s = s[cols:]
	}
	return append(out, s)
}
