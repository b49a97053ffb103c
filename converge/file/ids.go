package file

import (
	"errors"

	"github.com/hivefleet/hive/converge"
)

// pendingAccount reports whether a failed lookup of name in db ("passwd"
// or "group") is only because the account is planned, not made, in this
// dry run: the engine orders a file after the user and group resources
// that own it (converge.ImplicitRequires), so in a dry run they are in
// the batch's Changed set when they would be created. A group may be a
// user's own group, which useradd makes with the user. Outside a dry run
// the account exists by then, or the lookup error stands.
func pendingAccount(env *converge.Env, b *converge.Batch, db, name string, err error) bool {
	if !env.DryRun || b == nil || !errors.As(err, new(*converge.NoAccountError)) {
		return false
	}
	if db == "passwd" {
		return b.Changed["user:"+name]
	}
	return b.Changed["group:"+name] || b.Changed["user:"+name]
}
