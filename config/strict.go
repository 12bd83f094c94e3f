package config

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// maxNodes bounds the walk: a real config has hundreds of nodes, while a
// few lines of nested aliases can stand for billions.
const maxNodes = 100_000

// decoder walks the YAML tree against the Go types before yaml.v3 decodes
// it. yaml.v3 can refuse unknown keys only when decoding bytes, not a
// Node, and its messages name Go types ("field x not found in type
// config.Etcd"); the walk names keys as the user wrote them, with the path
// to them, and records the line of every path for the later checks.
type decoder struct {
	file     string
	lines    map[string]int
	errs     []error
	budget   int
	expanded map[*yaml.Node]bool
	active   map[*yaml.Node]bool // the mappings and lists being walked
	lookup   func(string) (string, bool)
}

var durationType = reflect.TypeFor[time.Duration]()

func (d *decoder) walk(n *yaml.Node, t reflect.Type, path string) {
	if d.budget--; d.budget < 0 {
		if d.budget == -1 {
			d.errorAt(n.Line, "too many values once aliases are expanded (more than %d)", maxNodes)
		}
		return
	}
	if _, seen := d.lines[path]; !seen && path != "" {
		d.lines[path] = n.Line
	}
	at := n.Line
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			d.errorAt(n.Line, "%s: alias to nothing", pathOr(path))
			return
		}
		n = n.Alias
	}
	if !d.enter(n, at, path) {
		return
	}
	defer delete(d.active, n)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // the zero value; validation says if it is needed
	}
	switch {
	case t == durationType:
		d.duration(n, path)
	case t.Kind() == reflect.Struct:
		d.structure(n, t, path)
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errorAt(n.Line, "%s: want a list, got %s", pathOr(path), describe(n))
			return
		}
		for i, item := range n.Content {
			d.walk(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case t.Kind() == reflect.Map:
		d.mapping(n, t, path)
	case t.Kind() == reflect.String:
		d.str(n, path)
	case t.Kind() == reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			d.errorAt(n.Line, "%s: want true or false, got %s", pathOr(path), describeValue(n))
		}
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		v := reflect.New(t)
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(v.Interface()) != nil {
			d.errorAt(n.Line, "%s: want a whole number, got %s", pathOr(path), describeValue(n))
		}
	default:
		d.errorAt(n.Line, "%s: values of type %s are not supported", pathOr(path), t)
	}
}

// enter marks a node as being walked, and refuses one already being
// walked: an alias inside its own anchor ("a: &a {<<: *a}") would make the
// walk endless.
func (d *decoder) enter(n *yaml.Node, line int, path string) bool {
	if n.Kind != yaml.MappingNode && n.Kind != yaml.SequenceNode {
		return true
	}
	if d.active[n] {
		d.errorAt(line, "%s: an alias inside the value it refers to", pathOr(path))
		return false
	}
	d.active[n] = true
	return true
}

// structure checks a mapping against a struct's yaml keys.
func (d *decoder) structure(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorAt(n.Line, "%s: want a mapping (key: value), got %s", pathOr(path), describe(n))
		return
	}
	fields := yamlFields(t)
	seen := map[string]int{}
	d.entries(n, func(k, v *yaml.Node) {
		if k.ShortTag() == "!!merge" {
			d.merge(v, t, path)
			return
		}
		if k.Kind != yaml.ScalarNode {
			d.errorAt(k.Line, "keys must be plain words %s, got %s", where(path), describe(k))
			return
		}
		if first, dup := seen[k.Value]; dup {
			d.errorAt(k.Line, "key %q appears twice %s (first at line %d)", k.Value, where(path), first)
			return
		}
		seen[k.Value] = k.Line
		f, ok := fields[k.Value]
		if !ok {
			d.errorAt(k.Line, "unknown key %q %s%s", k.Value, where(path), suggest(k.Value, fields))
			return
		}
		d.field(k, v, f.Type, join(path, k.Value))
	})
}

// merge walks the mapping(s) of a YAML merge key ("<<: *base") as part of
// the mapping that holds it.
func (d *decoder) merge(v *yaml.Node, t reflect.Type, path string) {
	at := v.Line
	if v.Kind == yaml.AliasNode && v.Alias != nil {
		v = v.Alias
	}
	if d.budget--; d.budget < 0 || !d.enter(v, at, path) {
		return
	}
	defer delete(d.active, v)
	switch v.Kind {
	case yaml.MappingNode:
		d.structure(v, t, path)
	case yaml.SequenceNode:
		for _, item := range v.Content {
			d.merge(item, t, path)
		}
	default:
		d.errorAt(v.Line, "%s: a merge (<<) needs a mapping or a list of mappings, got %s", pathOr(path), describe(v))
	}
}

// mapping checks a free-form map (inventory subnets).
func (d *decoder) mapping(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorAt(n.Line, "%s: want a mapping (key: value), got %s", pathOr(path), describe(n))
		return
	}
	seen := map[string]int{}
	d.entries(n, func(k, v *yaml.Node) {
		if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!merge" {
			d.errorAt(k.Line, "keys must be plain words %s, got %s", where(path), describe(k))
			return
		}
		if first, dup := seen[k.Value]; dup {
			d.errorAt(k.Line, "key %q appears twice %s (first at line %d)", k.Value, where(path), first)
			return
		}
		seen[k.Value] = k.Line
		d.field(k, v, t.Elem(), join(path, k.Value))
	})
}

// field walks the value of a key. Checks of the value as a whole point at
// the key's line: in block style the value starts on a later line.
func (d *decoder) field(k, v *yaml.Node, t reflect.Type, path string) {
	if _, seen := d.lines[path]; !seen {
		d.lines[path] = k.Line
	}
	d.walk(v, t, path)
}

func (d *decoder) entries(n *yaml.Node, f func(k, v *yaml.Node)) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		f(n.Content[i], n.Content[i+1])
	}
}

// str expands environment references in a string value, in place, so the
// final decode sees the expanded text as a plain string.
func (d *decoder) str(n *yaml.Node, path string) {
	if n.Kind != yaml.ScalarNode {
		d.errorAt(n.Line, "%s: want a string, got %s", pathOr(path), describe(n))
		return
	}
	if d.expanded[n] {
		return // reached again through an alias
	}
	d.expanded[n] = true
	v, err := expand(n.Value, d.lookup)
	if err != nil {
		d.errorAt(n.Line, "%s: %v", pathOr(path), err)
		return
	}
	n.Value = v
	// Marked as a string so the expanded text is never read as YAML
	// (an empty value as null, "true" as a bool).
	n.Tag = "!!str"
}

func (d *decoder) duration(n *yaml.Node, path string) {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" {
		if _, err := time.ParseDuration(n.Value); err == nil {
			return
		}
	}
	d.errorAt(n.Line, "%s: want a duration like 30s, 5m or 1h30m, got %s", pathOr(path), describeValue(n))
}

// yamlFields maps the yaml key of each field of t to the field.
func yamlFields(t reflect.Type) map[string]reflect.StructField {
	m := map[string]reflect.StructField{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = f
	}
	return m
}

// suggest names the known key closest to a misspelt one.
func suggest(key string, fields map[string]reflect.StructField) string {
	best, bestDist := "", 3
	for name := range fields {
		if strings.EqualFold(name, key) {
			return fmt.Sprintf(" (did you mean %q?)", name)
		}
		if dist := editDistance(strings.ToLower(key), strings.ToLower(name)); dist < bestDist || dist == bestDist && name < best {
			best, bestDist = name, dist
		}
	}
	if best == "" || len(key) < 3 {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// describe says what a node is, for "want X, got Y" messages, without its
// value: a scalar where a list or mapping belongs may be a pasted secret.
func describe(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode && n.ShortTag() != "!!null" {
		return "a single value"
	}
	return describeValue(n)
}

// describeValue is describe quoting scalars, for fields that hold numbers,
// booleans or durations, never secrets.
func describeValue(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "nothing"
		}
		v := n.Value
		if len(v) > 40 {
			v = v[:40] + "..."
		}
		return fmt.Sprintf("%q", v)
	}
	return "nothing"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func pathOr(path string) string {
	if path == "" {
		return "top level"
	}
	return path
}

func where(path string) string {
	if path == "" {
		return "at the top level"
	}
	return "in " + path
}
