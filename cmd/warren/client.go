package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/warrenvpn/warren"
	"github.com/warrenvpn/warren/admin"
)

const clientUsage = `usage: warren client <verb> [flags] [ID]

verbs:
  create ID [--description D] [--tag T]... [--priority N] [--expires TIME] [--security FILE]
            [--forwarding-mode netstack|testing] [--out FILE] [--wireguard-out FILE] [--json | --qr]
            register a client; its config (with private keys) goes to --out, else stdout;
            --qr prints its WireGuard .conf as a QR code instead, for a phone to scan
  list [--json]                   the registered clients
  get ID                          one client's registry record, as JSON
  update ID [--description D] [--tag T]... [--priority N] [--expires TIME|never] [--security FILE]
  enable ID | disable ID | remove ID
  rotate ID [--out FILE] [--wireguard-out FILE] [--json | --qr]
                                  new keys; the old ones stop working at once
  export ID [--format native|wireguard]
                                  the client's config without private keys
  disconnect ID [--reason TEXT]   end its live sessions (it reconnects; disable keeps it out)

Every verb takes --admin-socket PATH (default: see warren -h).
TIME is RFC 3339 (2027-01-02T15:04:05Z) or a duration from now (720h).
`

// strList is a repeatable string flag.
type strList []string

func (s *strList) String() string     { return strings.Join(*s, ",") }
func (s *strList) Set(v string) error { *s = append(*s, v); return nil }

func socketFlag(fs *flag.FlagSet) *string {
	return fs.String("admin-socket", defaultAdminSocket(), "the hub's admin socket")
}

// call runs one admin call with a timeout.
func call(sock, method string, req, res any) error {
	c := admin.NewClient(sock)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := c.Call(ctx, method, req, res)
	if err != nil && !isAdminError(err) {
		return fmt.Errorf("%w (is the hub running with --admin-socket %s?)", err, sock)
	}
	return err
}

func isAdminError(err error) bool {
	_, ok := err.(*admin.Error)
	return ok
}

func (e *env) printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "%s\n", b)
	return err
}

// parseTime reads RFC 3339 or a duration from now.
func parseTime(s string) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(d).UTC().Truncate(time.Second), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, usagef("--expires %q: want RFC 3339 (2027-01-02T15:04:05Z) or a duration (720h)", s)
	}
	return t, nil
}

// readSecurity reads a ClientSecurity JSON file, strictly.
func readSecurity(path string) (*warren.ClientSecurity, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--security: %w", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	var s warren.ClientSecurity
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("--security %s: %w", path, err)
	}
	return &s, nil
}

// oneID checks that exactly one client ID was given.
func oneID(verb string, pos []string) (string, error) {
	if len(pos) != 1 {
		return "", usagef("client %s needs one client ID", verb)
	}
	return pos[0], nil
}

func (e *env) client(args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(e.stdout, clientUsage)
		if len(args) == 0 {
			return usagef("client needs a verb")
		}
		return nil
	}
	verb, args := args[0], args[1:]
	fs := e.newFlags("client "+verb, "client "+verb+" [flags] [ID]")
	sock := socketFlag(fs)
	switch verb {
	case "create", "rotate":
		var (
			desc, sec, fwd string
			tags           strList
			prio           int
			expires        string
		)
		if verb == "create" {
			fs.StringVar(&desc, "description", "", "a description")
			fs.Var(&tags, "tag", "a server-defined tag (repeatable)")
			fs.IntVar(&prio, "priority", 0, "priority 0-7")
			fs.StringVar(&expires, "expires", "", "end of access: RFC 3339 or a duration from now")
			fs.StringVar(&sec, "security", "", "a JSON file holding the client's security (ACLs, maxConnections)")
			fs.StringVar(&fwd, "forwarding-mode", "", "written into the client's config: netstack (default) or testing")
		}
		out := fs.String("out", "", "write the client's config (with its private keys, mode 0600) here rather than to stdout")
		wgOut := fs.String("wireguard-out", "", "write the WireGuard .conf (with its private key, mode 0600) here")
		asJSON := fs.Bool("json", false, "print the whole bundle (entry, config, .conf, secrets) as JSON")
		asQR := fs.Bool("qr", false, "print the WireGuard .conf as a QR code for a phone's WireGuard app, rather than the config")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		id, err := oneID(verb, pos)
		if err != nil {
			return err
		}
		if *asQR && *asJSON {
			return usagef("--qr and --json: pick one")
		}
		var b warren.ClientBundle
		if verb == "create" {
			spec := warren.ClientSpec{ClientID: id, Description: desc, ServerDefinedClientTags: tags, Priority: prio,
				ForwardingMode: warren.ForwardingMode(fwd)}
			if expires != "" {
				if spec.ExpiresAt, err = parseTime(expires); err != nil {
					return err
				}
			}
			if sec != "" {
				if spec.Security, err = readSecurity(sec); err != nil {
					return err
				}
			}
			err = call(*sock, "CreateClient", spec, &b)
		} else {
			err = call(*sock, "RotateClientKey", map[string]string{"clientId": id}, &b)
		}
		if err != nil {
			return err
		}
		return e.writeBundle(&b, *out, *wgOut, *asJSON, *asQR)
	case "list":
		asJSON := fs.Bool("json", false, "print JSON")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) > 0 {
			return usagef("client list takes no arguments")
		}
		var list []warren.ClientEntry
		if err := call(*sock, "ListRegisteredClients", nil, &list); err != nil {
			return err
		}
		if *asJSON {
			return e.printJSON(list)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tADDRESS\tENABLED\tEXPIRES\tTAGS\tDESCRIPTION")
		for _, c := range list {
			exp := "-"
			if !c.ExpiresAt.IsZero() {
				exp = c.ExpiresAt.UTC().Format(time.RFC3339)
			}
			tags := strings.Join(c.ServerDefinedClientTags, ",")
			if tags == "" {
				tags = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%t\t%s\t%s\t%s\n", c.ClientID, c.AssignedIP, c.Enabled, exp, tags, c.Description)
		}
		return tw.Flush()
	case "get", "enable", "disable", "remove":
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		id, err := oneID(verb, pos)
		if err != nil {
			return err
		}
		req := map[string]string{"clientId": id}
		switch verb {
		case "get":
			var ce warren.ClientEntry
			if err := call(*sock, "GetClient", req, &ce); err != nil {
				return err
			}
			return e.printJSON(ce)
		case "enable":
			err = call(*sock, "EnableClient", req, nil)
		case "disable":
			err = call(*sock, "DisableClient", req, nil)
		case "remove":
			err = call(*sock, "RemoveClient", req, nil)
		}
		if err == nil {
			fmt.Fprintf(e.stderr, "%s: %s\n", id, map[string]string{"enable": "enabled", "disable": "disabled", "remove": "removed"}[verb])
		}
		return err
	case "update":
		desc := fs.String("description", "", "a new description")
		var tags strList
		fs.Var(&tags, "tag", "a server-defined tag (repeatable; replaces the tags)")
		noTags := fs.Bool("no-tags", false, "remove every tag")
		prio := fs.Int("priority", 0, "priority 0-7")
		expires := fs.String("expires", "", `end of access: RFC 3339, a duration from now, or "never"`)
		sec := fs.String("security", "", "a JSON file holding the client's new security")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		id, err := oneID(verb, pos)
		if err != nil {
			return err
		}
		var u warren.ClientUpdate
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if set["description"] {
			u.Description = desc
		}
		if set["tag"] || *noTags {
			t := []string(tags)
			if t == nil {
				t = []string{}
			}
			u.ServerDefinedClientTags = &t
		}
		if set["priority"] {
			u.Priority = prio
		}
		if set["expires"] {
			var at time.Time
			if *expires != "never" {
				if at, err = parseTime(*expires); err != nil {
					return err
				}
			}
			u.ExpiresAt = &at
		}
		if set["security"] {
			if u.Security, err = readSecurity(*sec); err != nil {
				return err
			}
		}
		req := struct {
			ClientID string `json:"clientId"`
			warren.ClientUpdate
		}{id, u}
		var ce warren.ClientEntry
		if err := call(*sock, "UpdateClient", req, &ce); err != nil {
			return err
		}
		return e.printJSON(ce)
	case "export":
		format := fs.String("format", "native", "native (the client's JSON config) or wireguard (a .conf)")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		id, err := oneID(verb, pos)
		if err != nil {
			return err
		}
		var res admin.ExportResult
		if err := call(*sock, "ExportClientConfig", map[string]string{"clientId": id, "format": *format}, &res); err != nil {
			return err
		}
		fmt.Fprint(e.stdout, strings.TrimSuffix(res.Config, "\n")+"\n")
		return nil
	case "disconnect":
		reason := fs.String("reason", "", "the reason sent to the client, for people")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		id, err := oneID(verb, pos)
		if err != nil {
			return err
		}
		if err := call(*sock, "DisconnectClient", map[string]string{"clientId": id, "reason": *reason}, nil); err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "%s: disconnected\n", id)
		return nil
	default:
		fmt.Fprint(e.stderr, clientUsage)
		return usagef("unknown client verb %q", verb)
	}
}

// writeBundle puts a new bundle's config where it was asked for.
func (e *env) writeBundle(b *warren.ClientBundle, out, wgOut string, asJSON, asQR bool) error {
	var noQR error
	if asQR && b.WireGuardConfig == "" {
		// The client exists now: write its config as without --qr, so its
		// keys are not lost, and say why there is no QR code.
		asQR, noQR = false, errors.New("--qr: the hub does not run WireGuard, so the bundle has no .conf")
	}
	if wgOut != "" {
		if b.WireGuardConfig == "" {
			return fmt.Errorf("--wireguard-out: the hub does not run WireGuard, so the bundle has no .conf")
		}
		if err := writeSecret(wgOut, b.WireGuardConfig); err != nil {
			return err
		}
	}
	switch {
	case asJSON:
		if out != "" {
			return usagef("--json and --out: pick one")
		}
		return e.printJSON(b)
	case asQR:
		if out != "" {
			if err := b.Config.Save(out); err != nil {
				return err
			}
		}
		if err := writeQR(e.stdout, b.WireGuardConfig); err != nil {
			return err
		}
	case out != "":
		if err := b.Config.Save(out); err != nil {
			return err
		}
	default:
		if err := e.printJSON(b.Config); err != nil {
			return err
		}
	}
	fmt.Fprintf(e.stderr, "client %s: address %s", b.Entry.ClientID, b.Entry.AssignedIP)
	if out != "" {
		fmt.Fprintf(e.stderr, ", config in %s", out)
	}
	if wgOut != "" {
		fmt.Fprintf(e.stderr, ", WireGuard .conf in %s", wgOut)
	}
	fmt.Fprintln(e.stderr)
	return noQR
}

// writeSecret writes a file only its owner can read.
func writeSecret(path, text string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(text)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (e *env) status(args []string) error {
	fs := e.newFlags("status", "status [--json]")
	sock := socketFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON: {status, clients}")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("status takes no arguments")
	}
	var st warren.ServerStatus
	if err := call(*sock, "Status", nil, &st); err != nil {
		return err
	}
	var live []warren.ClientInfo
	if err := call(*sock, "ListClients", nil, &live); err != nil {
		return err
	}
	if *asJSON {
		return e.printJSON(struct {
			Status  warren.ServerStatus `json:"status"`
			Clients []warren.ClientInfo `json:"clients"`
		}{st, live})
	}
	fmt.Fprintf(e.stdout, "hub %s on %s, transports %s, forwarding %s\n", st.Status, st.Addr, strings.Join(st.Transports, ", "), st.ForwardingMode)
	if !st.StartedAt.IsZero() {
		fmt.Fprintf(e.stdout, "up since %s\n", st.StartedAt.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(e.stdout, "%d registered clients, %d live sessions\n", st.RegisteredClients, st.ConnectedClients)
	if len(live) == 0 {
		return nil
	}
	fmt.Fprintln(e.stdout)
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDRESS\tTRANSPORT\tREMOTE\tSINCE\tBYTES IN\tBYTES OUT")
	for _, c := range live {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.ClientID, c.AssignedIP, c.Transport, c.RemoteAddr,
			c.ConnectedSince.UTC().Format(time.RFC3339), strconv.FormatUint(c.BytesIn, 10), strconv.FormatUint(c.BytesOut, 10))
	}
	return tw.Flush()
}

func (e *env) stats(args []string) error {
	fs := e.newFlags("stats", "stats")
	sock := socketFlag(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("stats takes no arguments")
	}
	var st warren.Statistics
	if err := call(*sock, "Statistics", nil, &st); err != nil {
		return err
	}
	return e.printJSON(st)
}
