// Package site reads site files: the YAML in which operators declare roles,
// the selectors that give nodes their roles, and the resources each role
// needs. Parse turns a file into the hivev1.Site model with every default
// filled in, or returns an ErrorList naming every problem at once with its
// file:line:column, field path and reason. Check re-validates a Site that
// arrived over the API (the coordinator never trusts the client's
// validation). Hash gives the sha256 of a Site's canonical form, which
// identifies a generation: two files that differ only in comments, layout,
// key order or spelled-out defaults hash the same.
//
// Everything here is pure and safe for concurrent use; nothing blocks.
// The file format is documented in docs/site-file.md.
package site
