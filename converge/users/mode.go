package users

import "os"

// modeOK reports whether the file at host path hp has exactly mode perm
// and is owned by root.
func modeOK(hp string, perm os.FileMode) bool {
	fi, err := os.Lstat(hp)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != perm {
		return false
	}
	uid, gid, ok := owner(fi)
	return ok && uid == 0 && gid == 0
}
