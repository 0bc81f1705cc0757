// ollama_render: renders a Modelfile's TEMPLATE the way Ollama does, for tests/test_ollama.py.
//
// Standard library only (no go.mod, nothing to download): `go build -o BIN main.go`.
//
// stdin: a JSON list of requests {"modelfile": PATH, "messages": [{role, content, thinking}],
// "think": null|true|false}; stdout: a JSON list of {"prompt": ..., "commands": [{name, args}]}
// (without "messages", the Modelfile is only parsed).
//
// What it models of Ollama (server/routes.go ChatHandler and template/template.go Execute):
//   - the Modelfile read as Ollama's parser reads it: `#` comment lines; NAME VALUE commands whose
//     value ends at a newline once it is a whole bare, "quoted" or """triple-quoted""" string;
//     runes that are not printable, other than spaces, tabs and line breaks, dropped;
//   - the Modelfile's SYSTEM put in front of the messages when the first one is not a system one;
//   - consecutive messages of one role (other than "tool") merged, joined by a blank line; .System
//     the system messages' contents joined the same way, the system messages kept in .Messages;
//   - text/template with missingkey=zero and Ollama's `json` function, executed on a map holding
//     System, Messages, Tools, Response (""), Think, IsThinkSet, Query, Document and Instruction.
//
// Only the .Messages path is modelled: a template that never names .Messages would be run by
// Ollama once per turn on .System/.Prompt/.Response, and is refused here.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/template"
	"text/template/parse"
	"unicode"
)

// Message has the fields of Ollama's api.Message that templates read.
type Message struct {
	Role      string           `json:"role"`
	Content   string           `json:"content"`
	Thinking  string           `json:"thinking,omitempty"`
	Images    []string         `json:"images,omitempty"`
	ToolCalls []map[string]any `json:"tool_calls,omitempty"`
	ToolName  string           `json:"tool_name,omitempty"`
}

type request struct {
	Modelfile string    `json:"modelfile"`
	Messages  []Message `json:"messages"`
	Think     *bool     `json:"think"`
}

type command struct {
	Name string `json:"name"`
	Args string `json:"args"`
}

type result struct {
	Prompt   string    `json:"prompt"`
	Commands []command `json:"commands"`
	Error    string    `json:"error,omitempty"`
}

func isLetter(r rune) bool { return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' }
func isBlank(r rune) bool  { return r == ' ' || r == '\t' }
func isBreak(r rune) bool  { return r == '\n' || r == '\r' }

// unquote accepts a whole value: bare, "…" or """…""" (the quotes removed).
func unquote(s string) (string, bool) {
	if strings.HasPrefix(s, `"""`) {
		if len(s) >= 6 && strings.HasSuffix(s, `"""`) {
			return s[3 : len(s)-3], true
		}
		return "", false
	}
	if strings.HasPrefix(s, `"`) {
		if len(s) >= 2 && strings.HasSuffix(s, `"`) {
			return s[1 : len(s)-1], true
		}
		return "", false
	}
	return s, true
}

func parseModelfile(src string) ([]command, error) {
	rs := []rune(src)
	var cmds []command
	i := 0
	for i < len(rs) {
		switch r := rs[i]; {
		case isBlank(r) || isBreak(r):
			i++
			continue
		case r == '#':
			for i < len(rs) && !isBreak(rs[i]) {
				i++
			}
			continue
		}
		start := i
		for i < len(rs) && isLetter(rs[i]) {
			i++
		}
		name := strings.ToLower(string(rs[start:i]))
		switch name {
		case "from", "template", "system", "parameter", "license", "adapter", "message":
		default:
			return nil, fmt.Errorf("unknown command %q", name)
		}
		if i >= len(rs) || !isBlank(rs[i]) {
			return nil, fmt.Errorf("command %q: no value", name)
		}
		i++
		if name == "from" {
			name = "model"
		}
		if name == "parameter" || name == "message" {
			start = i
			for i < len(rs) && (isLetter(rs[i]) || rs[i] >= '0' && rs[i] <= '9' || rs[i] == '_') {
				i++
			}
			if i >= len(rs) || !isBlank(rs[i]) {
				return nil, errors.New("PARAMETER/MESSAGE without a value")
			}
			name = string(rs[start:i])
			i++
		}
		var b strings.Builder
		done := false
		for ; i < len(rs); i++ {
			r := rs[i]
			if isBreak(r) {
				if v, ok := unquote(strings.TrimSpace(b.String())); ok {
					cmds = append(cmds, command{name, v})
					done = true
					i++
					break
				}
			}
			if isBlank(r) || isBreak(r) || unicode.IsPrint(r) {
				b.WriteRune(r)
			}
		}
		if !done {
			v, ok := unquote(strings.TrimSpace(b.String()))
			if !ok {
				return nil, fmt.Errorf("command %q: unterminated quote", name)
			}
			cmds = append(cmds, command{name, v})
		}
	}
	return cmds, nil
}

// identifiers lists the field and variable names a template uses, as Ollama's Template.Vars does.
func identifiers(n parse.Node) []string {
	var out []string
	switch n := n.(type) {
	case *parse.ListNode:
		if n != nil {
			for _, c := range n.Nodes {
				out = append(out, identifiers(c)...)
			}
		}
	case *parse.ActionNode:
		out = identifiers(n.Pipe)
	case *parse.TemplateNode:
		if n.Pipe != nil {
			out = identifiers(n.Pipe)
		}
	case *parse.IfNode:
		out = identifiers(&n.BranchNode)
	case *parse.RangeNode:
		out = identifiers(&n.BranchNode)
	case *parse.WithNode:
		out = identifiers(&n.BranchNode)
	case *parse.BranchNode:
		out = identifiers(n.Pipe)
		out = append(out, identifiers(n.List)...)
		if n.ElseList != nil {
			out = append(out, identifiers(n.ElseList)...)
		}
	case *parse.PipeNode:
		for _, c := range n.Cmds {
			for _, a := range c.Args {
				out = append(out, identifiers(a)...)
			}
		}
	case *parse.FieldNode:
		out = n.Ident
	case *parse.VariableNode:
		out = n.Ident
	}
	return out
}

// collate merges consecutive messages of one role (not "tool") and gathers the system prompts.
func collate(msgs []Message) (string, []*Message) {
	var system []string
	var out []*Message
	for i := range msgs {
		m := msgs[i]
		if m.Role == "system" {
			system = append(system, m.Content)
		}
		if n := len(out); n > 0 && out[n-1].Role == m.Role && m.Role != "tool" {
			out[n-1].Content += "\n\n" + m.Content
		} else {
			out = append(out, &m)
		}
	}
	return strings.Join(system, "\n\n"), out
}

func render(req request) (result, error) {
	src, err := os.ReadFile(req.Modelfile)
	if err != nil {
		return result{}, err
	}
	cmds, err := parseModelfile(string(src))
	if err != nil {
		return result{}, err
	}
	res := result{Commands: cmds}
	if req.Messages == nil { // parse only
		return res, nil
	}
	text, system := "{{ .Prompt }}", ""
	for _, c := range cmds {
		switch c.Name {
		case "template":
			text = c.Args
		case "system":
			system = c.Args
		}
	}
	funcs := template.FuncMap{"json": func(v any) string { b, _ := json.Marshal(v); return string(b) }}
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(text)
	if err != nil {
		return res, err
	}
	usesMessages := false
	for _, t := range tmpl.Templates() {
		for _, id := range identifiers(t.Root) {
			usesMessages = usesMessages || strings.EqualFold(id, "messages")
		}
	}
	if !usesMessages {
		return res, errors.New("the template does not use .Messages: Ollama's per-turn legacy path is not modelled")
	}
	msgs := req.Messages
	if len(msgs) > 0 && msgs[0].Role != "system" && system != "" {
		msgs = append([]Message{{Role: "system", Content: system}}, msgs...)
	}
	sys, collated := collate(msgs)
	var b strings.Builder
	err = tmpl.Execute(&b, map[string]any{
		"System":      sys,
		"Messages":    collated,
		"Tools":       []map[string]any(nil),
		"Response":    "",
		"Think":       req.Think != nil && *req.Think,
		"IsThinkSet":  req.Think != nil,
		"Query":       "",
		"Document":    "",
		"Instruction": "",
	})
	res.Prompt = b.String()
	return res, err
}

func main() {
	var reqs []request
	if err := json.NewDecoder(os.Stdin).Decode(&reqs); err != nil {
		fmt.Fprintln(os.Stderr, "bad request:", err)
		os.Exit(2)
	}
	out := make([]result, 0, len(reqs))
	for _, req := range reqs {
		res, err := render(req)
		if err != nil {
			res.Error = err.Error()
		}
		out = append(out, res)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
