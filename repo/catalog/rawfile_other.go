//go:build !linux

package catalog

import "os"

// openRaw is os.Open and its Stat where the Linux system-call path is not built.
func openRaw(path string) (*os.File, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}
