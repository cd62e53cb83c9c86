// Command warren runs a Warren VPN hub or client from a JSON config file and
// manages a running hub through its admin socket.
//
//	warren keygen [--wireguard]               a keypair: private key, then public key
//	warren pubkey                             the public key of the private key on stdin
//	warren check --config FILE [--mode hub|client]   validate a config without starting
//	warren hub --config hub.json [--registry FILE] [--admin-socket PATH]
//	           [--admin-http 127.0.0.1:PORT [--admin-token-file FILE]] [--log-format text|json]
//	warren connect --config client.json [--forward LISTEN=TARGET]... [--log-format text|json]
//	warren client create|list|get|update|enable|disable|rotate|export|remove|disconnect ...
//	warren client create ID --qr             the new client's WireGuard .conf as a QR code
//	warren status | warren stats              the hub's status, live clients and counters
//	warren wg server-conf [--nat --uplink IF] the hub's WireGuard server .conf (wg-quick)
//	warren install --mode hub|client [--platform systemd|launchd] [--write]
//	warren version
//
// The hub's config file is a warren.ServerConfig and the client's a
// warren.ClientConfig, in the camelCase JSON of the warren package, read
// strictly (an unknown field is an error naming it). The registry of clients
// lives in the --registry file; without one it is kept in memory and lost
// when the hub stops.
//
// "warren connect" prints the assigned address and the link quality
// (health, smoothed RTT, keepalive loss) when it connects, and again
// whenever the link's health changes. It runs the client in the config's
// forwardingMode: netstack by default, or tun (Linux, root or
// CAP_NET_ADMIN), where the host's own sockets reach the tunnel and
// --forward is refused; without the privilege the client's error is printed
// on one line and the exit status is 1.
//
// The client, status and wg commands talk to the hub's admin socket (package
// admin): --admin-socket, else $WARREN_ADMIN_SOCKET, else
// $XDG_RUNTIME_DIR/warren/admin.sock for a user other than root that has a
// runtime directory, else /run/warren/admin.sock.
//
// "warren client create --qr" prints the WireGuard .conf as a QR code for a
// phone's WireGuard app. It is drawn with github.com/piglig/go-qr: a
// maintained port of Nayuki's QR code generator, with no dependencies of its
// own and a decoder, with which the test reads the printed code back
// (skip2/go-qrcode, the older choice, has had no release since 2020).
//
// Exit status: 0 on success and on a clean stop by SIGINT or SIGTERM, 1 on an
// error, 2 on a usage error.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

const usage = `usage: warren <command> [flags]

commands:
  keygen [--wireguard]            print a new keypair: the private key, then the public key
  pubkey                          print the public key of the private key read from stdin
  check --config FILE             validate a hub (or --mode client) config without starting
  hub --config hub.json           run a hub (see warren hub -h)
  connect --config client.json    run a client (netstack, or the config's forwardingMode tun)
  client <verb> ...               manage the hub's registry: create list get update enable
                                  disable rotate export remove disconnect
  status                          the hub's status and live clients
  stats                           the hub's counters
  wg server-conf [--nat --uplink IF]
                                  the hub's WireGuard server .conf for its registry
  install --mode hub|client       print (or --write) a systemd unit or launchd plist
  version                         print the version

Run "warren <command> -h" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes one command and returns the exit status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	env := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "keygen":
		err = env.keygen(rest)
	case "pubkey":
		err = env.pubkey(rest)
	case "check":
		err = env.check(rest)
	case "hub":
		err = env.hub(rest)
	case "connect":
		err = env.connect(rest)
	case "client":
		err = env.client(rest)
	case "status":
		err = env.status(rest)
	case "stats":
		err = env.stats(rest)
	case "wg":
		err = env.wg(rest)
	case "install":
		err = env.install(rest)
	case "version":
		err = env.version(rest)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "warren: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "warren: %s\n", ue.msg)
		return 2
	default:
		msg := oneLine(err.Error())
		if !strings.HasPrefix(msg, "warren: ") {
			msg = "warren: " + msg
		}
		fmt.Fprintln(stderr, msg)
		return 1
	}
}

// oneLine keeps an error message on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

// env is where a command reads and writes.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// newFlags returns a FlagSet for a command that reports errors as usage
// errors (run prints them) and help on stdout.
func (e *env) newFlags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fs.SetOutput(e.stdout)
		fmt.Fprintf(e.stdout, "usage: warren %s\n\nflags:\n", synopsis)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs
}

// parse parses args, allowing flags before and after positional arguments,
// and returns the positional ones.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.Usage()
				return nil, err
			}
			return nil, usagef("%s: %v", fs.Name(), err)
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// defaultAdminSocket is where the client commands look for the hub's socket
// and where warren hub puts it.
func defaultAdminSocket() string {
	if p := os.Getenv("WARREN_ADMIN_SOCKET"); p != "" {
		return p
	}
	if os.Geteuid() != 0 {
		if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
			return filepath.Join(d, "warren", "admin.sock")
		}
	}
	return "/run/warren/admin.sock"
}
