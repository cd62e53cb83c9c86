package admin

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// ListenUnix listens on a Unix socket at path that only the running user
// can connect to: the socket file has mode 0600 from the moment it appears
// at path (it is made in a private directory beside path and renamed into
// place, so no umask or window leaves it open). A stale socket file left
// by a process that died is replaced; a socket that a live process listens
// on, or a path that is not a socket, is refused. Closing the listener
// removes the socket file, if it is still this listener's.
//
// Serve the admin API on it with http.Server{Handler: Handler(srv, nil)}.Serve(ln).
func ListenUnix(path string) (net.Listener, error) {
	if err := checkStale(path); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(filepath.Dir(path), ".warren-admin-")
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("admin: listening on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		ln.Close()
		return nil, fmt.Errorf("admin: listening on %s: %w", path, err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	fi, err := os.Lstat(tmp)
	if err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	return &unixListener{UnixListener: ln, path: path, file: fi}, nil
}

// checkStale refuses a path that is in use and removes a dead socket.
func checkStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("admin: %s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("admin: another process is listening on %s", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("admin: checking %s: %w", path, err)
	}
	// Nobody listens: a stale socket from a process that died. Rename
	// replaces it atomically; nothing to do here.
	return nil
}

// unixListener removes its socket file on Close.
type unixListener struct {
	*net.UnixListener
	path string
	file fs.FileInfo
	once sync.Once
}

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		// Only our own socket: another process may have taken the path.
		if fi, e := os.Lstat(l.path); e == nil && os.SameFile(fi, l.file) {
			os.Remove(l.path)
		}
	})
	return err
}
