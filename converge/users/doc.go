// Package users is the converge provider of the "user" and "group" kinds:
// local accounts, their SSH keys and sudo rules.
//
// Accounts are observed by reading the root's /etc/passwd, /etc/group and
// /etc/shadow, and changed with shadow-utils run on the host with
// --root ROOT (useradd, usermod, userdel, groupadd, groupmod, groupdel,
// chpasswd --encrypted, its input on stdin), so a root other than "/" (a
// debootstrap root in the tests) is converged with the host's tools and
// the root's configuration (/etc/login.defs, /etc/default/useradd,
// /etc/skel). That needs root privileges, so the agent's --root sandbox
// only plans these kinds.
//
// Invariants:
//   - what a resource does not give is left as it is (uid, primary group,
//     home, shell, comment, password); supplementary groups, when given,
//     are exactly the list; authorized_keys, when managed, holds exactly the
//     listed keys (~/.ssh 0700 and the file 0600, owned by the user; hive
//     refuses to write through a symbolic link in the user's home);
//   - a password comes from a secret holding a crypt(3) hash, fed to
//     chpasswd on stdin; no hash, old or new, is ever put in a plan;
//   - sudo rules go to /etc/sudoers.d/hive-user-NAME or hive-group-NAME
//     (dots become '_'), checked with the root's visudo (-c -f -) in Plan
//     and again (-c -f TEMP) on the written temporary file before it is
//     renamed into place; a rejected rule leaves the old file;
//   - a user naming a group that is neither in /etc/group nor created by a
//     group resource of the same run fails with "unknown group";
//   - accounts hive creates are recorded in /var/lib/hive/users.json and
//     groups.json of the root; pruning deletes only those (homes kept) and
//     drop-ins hive-user-*/hive-group-* of names no longer in the state.
//
// Everything blocks on the tools; the engine calls one method at a time.
package users
