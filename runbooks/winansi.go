package runbooks

import (
	"strings"
	"unicode"

	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/unicode/norm"
)

// The PDF core fonts (Helvetica, Courier) are used so that the PDF needs
// no font files, which limits text to the WinAnsi (Windows-1252)
// character set. winAnsi encodes a string for them. Other characters are
// transliterated where a close spelling exists (Ł as L, ć as c, ﬁ as fi),
// and otherwise shown as '?': a name printed as "?????" still leaves the
// phone number beside it readable, and step IDs and commands, which are
// ASCII, always come through intact.
func winAnsi(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if r == '\t' {
			r = ' '
		}
		if c, ok := encodeWinAnsi(r); ok {
			b.WriteByte(c)
			continue
		}
		if rep, ok := transliterations[r]; ok {
			b.WriteString(rep)
			continue
		}
		if rep, ok := decomposed(r); ok {
			b.WriteString(rep)
			continue
		}
		b.WriteByte('?')
	}
	return b.String()
}

// encodeWinAnsi maps r to its Windows-1252 byte. Control characters other
// than a line feed have no glyph and are refused.
func encodeWinAnsi(r rune) (byte, bool) {
	if r < 0x20 && r != '\n' {
		return 0, false
	}
	return charmap.Windows1252.EncodeRune(r)
}

// decomposed spells r with the base letters of its compatibility
// decomposition (é is e and an accent, ﬁ is f and i), dropping the marks.
func decomposed(r rune) (string, bool) {
	var b strings.Builder
	for _, d := range norm.NFKD.String(string(r)) {
		if unicode.Is(unicode.Mn, d) {
			continue
		}
		c, ok := encodeWinAnsi(d)
		if !ok {
			return "", false
		}
		b.WriteByte(c)
	}
	return b.String(), b.Len() > 0
}

// transliterations cover letters without a decomposition and the symbols
// most likely in names, notes and commands.
var transliterations = map[rune]string{
	'Ł': "L", 'ł': "l", 'Đ': "D", 'đ': "d", 'Ħ': "H", 'ħ': "h", 'ı': "i",
	'Ŧ': "T", 'ŧ': "t", 'Ŋ': "N", 'ŋ': "n", 'ĸ': "k",
	'‐': "-", '‑': "-", '‒': "-", '−': "-",
	'→': "->", '←': "<-", '⇒': "=>", '≤': "<=", '≥': ">=", '≠': "!=",
	'✓': "v", '✔': "v", '✗': "x", '✘': "x", '⚠': "(!)",
}
