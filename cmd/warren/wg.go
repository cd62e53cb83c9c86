package main

import (
	"fmt"
	"strings"

	"github.com/warrenvpn/warren"
	"github.com/warrenvpn/warren/admin"
)

const wgUsage = `usage: warren wg <verb> [flags]

verbs:
  server-conf [--nat --uplink IF] [--out FILE]
            the hub's WireGuard server .conf (wg-quick format) for the current
            registry: its interface (with the hub's WireGuard private key) and
            one peer per enabled, unexpired client and per static peer;
            --nat adds PostUp/PostDown lines that masquerade the subnet out of IF

Every verb takes --admin-socket PATH (default: see warren -h).
`

func (e *env) wg(args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(e.stdout, wgUsage)
		if len(args) == 0 {
			return usagef("wg needs a verb")
		}
		return nil
	}
	verb, args := args[0], args[1:]
	if verb != "server-conf" {
		fmt.Fprint(e.stderr, wgUsage)
		return usagef("unknown wg verb %q", verb)
	}
	fs := e.newFlags("wg server-conf", "wg server-conf [--nat --uplink IF] [--out FILE]")
	sock := socketFlag(fs)
	nat := fs.Bool("nat", false, "add iptables PostUp/PostDown lines that forward and masquerade the subnet out of --uplink")
	uplink := fs.String("uplink", "", "the host's interface toward the internet, for --nat (e.g. eth0)")
	out := fs.String("out", "", "write the .conf to this new file (mode 0600) instead of stdout")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("wg server-conf takes no arguments")
	}
	if *nat && *uplink == "" {
		return usagef("wg server-conf: --nat needs --uplink IF (the host's interface toward the internet)")
	}
	if !*nat && *uplink != "" {
		return usagef("wg server-conf: --uplink is only for --nat")
	}
	var res admin.ServerConfResult
	if err := call(*sock, "WireGuardServerConfig", warren.WGServerConfigOptions{NAT: *nat, Uplink: *uplink}, &res); err != nil {
		return err
	}
	text := strings.TrimSuffix(res.Config, "\n") + "\n"
	if *out == "" {
		_, err := fmt.Fprint(e.stdout, text)
		return err
	}
	if err := writeSecret(*out, text); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	fmt.Fprintf(e.stderr, "WireGuard server .conf in %s\n", *out)
	return nil
}
