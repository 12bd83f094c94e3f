package restore

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"text/template"
)

// Where says on which machine a step runs.
type Where string

const (
	// EveryNode steps run on each control-plane node, for that node.
	EveryNode Where = "each control-plane node"
	// FirstNode steps run once, on the first node of the plan.
	FirstNode Where = "the first node"
)

// Step is one step of a restore, as the engine runs it and as the runbook
// prints it.
type Step struct {
	// ID is one of the Step* constants. Journals on disk and operators'
	// --until and --from-step name steps by it, so an ID never changes.
	ID    string `json:"id"`
	Title string `json:"title"`
	// Why is a paragraph saying what the step protects against.
	Why   string `json:"why"`
	Where Where  `json:"where"`
	// Node is the node this instance of the step is for.
	Node string `json:"node"`
	// Commands are what a person types to do the step by hand, filled in
	// with this cluster's values.
	Commands []string `json:"commands"`
	// Expect says what the person should see when it worked.
	Expect string `json:"expect"`
	// Destructive steps change the host; the journal makes sure each runs
	// at most once.
	Destructive bool `json:"destructive"`
	// Phase numbers the stages of a restore from 1: every node prepares,
	// then etcd starts everywhere, then it is proven, then the control plane.
	Phase int `json:"phase"`

	action func(context.Context, *Env) error
	check  func(context.Context, *Env) error
}

// stepDef is the definition a Step is instantiated from for each node.
type stepDef struct {
	id, title, why string
	where          Where
	commands       []string // text/template, data is cmdData
	expect         string   // text/template
	destructive    bool
	// applies, if set, leaves the step out of a node's plan when false.
	applies func(p *Plan, n Node) bool
	action  func(context.Context, *Env) error
	check   func(context.Context, *Env) error
}

// instantiate fills the templates for one node. A definition without
// commands, action or check is refused: the engine and the runbook must
// be able to do and prove every step.
func (d stepDef) instantiate(p *Plan, n Node) (Step, error) {
	if d.id == "" || d.title == "" || d.why == "" || len(d.commands) == 0 || d.expect == "" || d.action == nil || d.check == nil {
		return Step{}, fmt.Errorf("step %q is incomplete: every step needs a title, why, commands, expect, an action and a check", d.id)
	}
	data := newCmdData(p, n)
	s := Step{ID: d.id, Title: d.title, Why: d.why, Where: d.where, Node: n.Name, Destructive: d.destructive, action: d.action, check: d.check}
	for _, c := range d.commands {
		out, err := fill(d.id, c, data)
		if err != nil {
			return Step{}, err
		}
		// A command only some topologies or nodes need renders empty
		// for the others.
		if strings.TrimSpace(out) != "" {
			s.Commands = append(s.Commands, out)
		}
	}
	var err error
	if s.Title, err = fill(d.id, d.title, data); err != nil {
		return Step{}, err
	}
	if s.Expect, err = fill(d.id, d.expect, data); err != nil {
		return Step{}, err
	}
	if s.Why, err = fill(d.id, d.why, data); err != nil {
		return Step{}, err
	}
	return s, nil
}

func fill(id, text string, data cmdData) (string, error) {
	t, err := template.New(id).Option("missingkey=error").Parse(text)
	if err != nil {
		return "", fmt.Errorf("step %s: %w", id, err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return "", fmt.Errorf("step %s: %w", id, err)
	}
	return b.String(), nil
}
