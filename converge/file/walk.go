package file

import "text/template/parse"

func walkSecrets(n parse.Node, seen map[string]bool) {
	switch x := n.(type) {
	case *parse.ListNode:
		if x == nil {
			return
		}
		for _, c := range x.Nodes {
			walkSecrets(c, seen)
		}
	case *parse.ActionNode:
		walkSecrets(x.Pipe, seen)
	case *parse.PipeNode:
		if x == nil {
			return
		}
		for _, c := range x.Cmds {
			walkSecrets(c, seen)
		}
	case *parse.CommandNode:
		if len(x.Args) >= 2 {
			if id, ok := x.Args[0].(*parse.IdentifierNode); ok && id.Ident == "secret" {
				if s, ok := x.Args[1].(*parse.StringNode); ok {
					seen[s.Text] = true
				}
			}
		}
		for _, a := range x.Args {
			walkSecrets(a, seen)
		}
	case *parse.IfNode:
		walkSecrets(x.Pipe, seen)
		walkSecrets(x.List, seen)
		walkSecrets(x.ElseList, seen)
	case *parse.RangeNode:
		walkSecrets(x.Pipe, seen)
		walkSecrets(x.List, seen)
		walkSecrets(x.ElseList, seen)
	case *parse.WithNode:
		walkSecrets(x.Pipe, seen)
		walkSecrets(x.List, seen)
		walkSecrets(x.ElseList, seen)
	}
}
