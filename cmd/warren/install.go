package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/warrenvpn/warren/install"
)

func (e *env) install(args []string) error {
	fs := e.newFlags("install", "install --mode hub|client [flags]")
	mode := fs.String("mode", "", "hub or client (required)")
	platform := fs.String("platform", string(install.PlatformFor(runtime.GOOS)), "systemd or launchd")
	var o install.Options
	fs.StringVar(&o.Binary, "binary", "", "the warren executable the service runs (default /usr/local/bin/warren)")
	fs.StringVar(&o.Config, "config", "", "the config file (default /etc/warren/MODE.json; launchd: /usr/local/etc/warren/MODE.json)")
	fs.BoolVar(&o.TUN, "tun", false, "give the service CAP_NET_ADMIN and /dev/net/tun (forwardingMode tun)")
	write := fs.Bool("write", false, "write the file to its place (needs root) rather than print it")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("install takes no arguments")
	}
	o.Mode = install.Mode(*mode)
	p := install.Platform(*platform)
	text, err := install.Generate(p, o)
	if err != nil {
		return err
	}
	if !*write {
		_, err := fmt.Fprint(e.stdout, text)
		return err
	}
	o = install.Defaults(p, o)
	if _, err := os.Stat(o.Binary); err != nil {
		fmt.Fprintf(e.stderr, "warning: %s does not exist yet: install the warren binary there\n", o.Binary)
	}
	if _, err := os.Stat(o.Config); err != nil {
		fmt.Fprintf(e.stderr, "warning: %s does not exist yet: write the %s config there (mode 0600)\n", o.Config, o.Mode)
	}
	for _, d := range install.Directories(p, o) {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	path := install.Path(p, o.Mode)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote %s\n", path)
	if p == install.Systemd {
		fmt.Fprintf(e.stdout, "start it with: systemctl daemon-reload && systemctl enable --now %s\n", install.UnitName(o.Mode))
	} else {
		fmt.Fprintf(e.stdout, "start it with: launchctl bootstrap system %s\n", path)
	}
	return nil
}
