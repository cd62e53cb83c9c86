// Package install generates service definitions for the warren command: a
// systemd unit (Linux) and a launchd property list (macOS), for a hub
// ("warren hub") or a client ("warren connect"). It only produces text and
// says where it belongs; writing it and starting the service is the
// caller's (warren install --write) or the operator's business.
//
// The systemd unit runs as a dynamic user (DynamicUser=yes) with the usual
// hardening (NoNewPrivileges, ProtectSystem=strict, an empty capability set
// but for what the mode needs, a system call filter). The config file, which
// holds private keys, stays root's: systemd hands the service a copy through
// LoadCredential, so it is read from the credentials directory (%d). The
// registry lives in the state directory (/var/lib/warren) and the admin
// socket in the runtime directory (/run/warren), both owned by the service;
// root reaches the socket, and so does nobody else.
package install

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"path/filepath"
	"strings"
	"text/template"
)

// Mode is what the service runs.
type Mode string

// Modes.
const (
	// Hub runs "warren hub".
	Hub Mode = "hub"
	// Client runs "warren connect".
	Client Mode = "client"
)

// Platform is a service manager.
type Platform string

// Platforms.
const (
	Systemd Platform = "systemd"
	Launchd Platform = "launchd"
)

// PlatformFor returns the service manager of a GOOS: launchd on darwin,
// systemd elsewhere.
func PlatformFor(goos string) Platform {
	if goos == "darwin" {
		return Launchd
	}
	return Systemd
}

// Options describe the service. Empty fields take the platform's defaults
// (see Defaults).
type Options struct {
	Mode Mode
	// Binary is the warren executable.
	Binary string
	// Config is the hub's or client's JSON config file.
	Config string
	// Registry is the hub's registry file (hub only).
	Registry string
	// AdminSocket is the hub's admin socket (hub only).
	AdminSocket string
	// Certificate keeps the hub's self-signed certificate across restarts,
	// when its config names no tlsCertFile (hub only).
	Certificate string
	// TUN gives the service CAP_NET_ADMIN and /dev/net/tun, for a config
	// whose forwardingMode is tun. Without it the service has no
	// capability but, for a hub, binding ports below 1024.
	TUN bool
	// LogFile is where launchd sends the output (launchd only).
	LogFile string
}

// Defaults returns o with its empty fields set to platform p's defaults.
func Defaults(p Platform, o Options) Options {
	set := func(v *string, def string) {
		if *v == "" {
			*v = def
		}
	}
	switch p {
	case Launchd:
		set(&o.Binary, "/usr/local/bin/warren")
		set(&o.Config, "/usr/local/etc/warren/"+string(o.Mode)+".json")
		set(&o.LogFile, "/usr/local/var/log/warren-"+string(o.Mode)+".log")
		if o.Mode == Hub {
			set(&o.Registry, "/usr/local/var/lib/warren/registry.json")
			set(&o.AdminSocket, "/usr/local/var/run/warren/admin.sock")
			set(&o.Certificate, "/usr/local/var/lib/warren/tls.pem")
		}
	default:
		set(&o.Binary, "/usr/local/bin/warren")
		set(&o.Config, "/etc/warren/"+string(o.Mode)+".json")
		if o.Mode == Hub {
			set(&o.Registry, "/var/lib/warren/registry.json")
			set(&o.AdminSocket, "/run/warren/admin.sock")
			set(&o.Certificate, "/var/lib/warren/tls.pem")
		}
	}
	return o
}

// Path returns where the service definition for mode belongs on platform p.
func Path(p Platform, mode Mode) string {
	if p == Launchd {
		return "/Library/LaunchDaemons/" + Label(mode) + ".plist"
	}
	return "/etc/systemd/system/" + UnitName(mode)
}

// UnitName is the systemd unit's name: warren-hub.service or warren-client.service.
func UnitName(mode Mode) string { return "warren-" + string(mode) + ".service" }

// Label is the launchd job's label.
func Label(mode Mode) string { return "com.warrenvpn.warren." + string(mode) }

// Generate returns the service definition for platform p.
func Generate(p Platform, o Options) (string, error) {
	switch o.Mode {
	case Hub, Client:
	default:
		return "", fmt.Errorf("install: mode %q: must be hub or client", o.Mode)
	}
	o = Defaults(p, o)
	for _, f := range []struct{ name, v string }{
		{"binary", o.Binary}, {"config", o.Config}, {"registry", o.Registry},
		{"admin socket", o.AdminSocket}, {"certificate", o.Certificate}, {"log file", o.LogFile},
	} {
		if f.v != "" && !filepath.IsAbs(f.v) {
			return "", fmt.Errorf("install: %s %q: must be an absolute path", f.name, f.v)
		}
		if strings.ContainsAny(f.v, "\n\r\"\\%$ ") {
			return "", fmt.Errorf("install: %s %q: spaces, quotes, %%, $ and backslashes are not supported in paths", f.name, f.v)
		}
	}
	switch p {
	case Systemd:
		return execute(systemdTmpl, o)
	case Launchd:
		if o.TUN {
			return "", fmt.Errorf("install: tun mode under launchd is not built yet")
		}
		return execute(launchdTmpl, o)
	default:
		return "", fmt.Errorf("install: platform %q: must be systemd or launchd", p)
	}
}

func execute(t *template.Template, o Options) (string, error) {
	var b bytes.Buffer
	if err := t.Execute(&b, o); err != nil {
		return "", fmt.Errorf("install: %w", err)
	}
	return b.String(), nil
}

// Args returns the warren command line the service runs, without the
// binary. configPath is where the service reads the config.
func Args(o Options, configPath string) []string {
	if o.Mode == Client {
		return []string{"connect", "--config", configPath}
	}
	return []string{"hub", "--config", configPath, "--registry", o.Registry, "--admin-socket", o.AdminSocket, "--self-signed-cert", o.Certificate}
}

var funcs = template.FuncMap{
	"base": filepath.Base,
	"dir":  filepath.Dir,
	"args": Args,
	"join": strings.Join,
	"xml": func(s string) (string, error) {
		var b strings.Builder
		err := xml.EscapeText(&b, []byte(s))
		return b.String(), err
	},
	"isHub": func(o Options) bool { return o.Mode == Hub },
}

var systemdTmpl = template.Must(template.New("systemd").Funcs(funcs).Parse(`[Unit]
Description=Warren VPN {{.Mode}}
Documentation=https://github.com/warrenvpn/warren
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart={{.Binary}} {{join (args . (printf "%%d/%s" (base .Config))) " "}}
Restart=on-failure
RestartSec=2s
# The config holds private keys: it stays root's, and the service reads a copy.
LoadCredential={{base .Config}}:{{.Config}}
DynamicUser=yes
{{- if isHub .}}
StateDirectory=warren
RuntimeDirectory=warren
RuntimeDirectoryMode=0700
{{- end}}
UMask=0077
{{- if .TUN}}
AmbientCapabilities=CAP_NET_ADMIN{{if isHub .}} CAP_NET_BIND_SERVICE{{end}}
CapabilityBoundingSet=CAP_NET_ADMIN{{if isHub .}} CAP_NET_BIND_SERVICE{{end}}
DeviceAllow=/dev/net/tun rw
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
{{- else if isHub .}}
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
PrivateDevices=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
{{- else}}
CapabilityBoundingSet=
PrivateDevices=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
{{- end}}
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
`))

var launchdTmpl = template.Must(template.New("launchd").Funcs(funcs).Parse(`<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>{{xml (printf "com.warrenvpn.warren.%s" .Mode)}}</string>
	<key>ProgramArguments</key>
	<array>
		<string>{{xml .Binary}}</string>
{{- range args . .Config}}
		<string>{{xml .}}</string>
{{- end}}
	</array>
	<key>RunAtLoad</key>
	<true/>
	<key>KeepAlive</key>
	<dict>
		<key>SuccessfulExit</key>
		<false/>
	</dict>
	<key>Umask</key>
	<integer>63</integer>
	<key>StandardOutPath</key>
	<string>{{xml .LogFile}}</string>
	<key>StandardErrorPath</key>
	<string>{{xml .LogFile}}</string>
</dict>
</plist>
`))

// Directories returns the directories the service needs that the platform
// does not make itself: on launchd, those of the registry, admin socket and
// log file.
func Directories(p Platform, o Options) []string {
	o = Defaults(p, o)
	if p != Launchd {
		return nil
	}
	var out []string
	for _, f := range []string{o.Registry, o.AdminSocket, o.LogFile} {
		if f != "" {
			out = append(out, filepath.Dir(f))
		}
	}
	return out
}
