package caddy

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/warrenvpn/warren"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("warren", parseGlobal)
}

// parseGlobal reads the global option
//
//	warren {
//		<field> <value...>
//		client <id> <publicKey> <assignedIp>
//		registryFile <path>
//	}
//
// into apps.warren. A field is any top-level field of the hub's JSON config
// (warren.ServerConfig) under its JSON name, with its value as arguments: one
// for a string, number or address, none or one (true/false) for a switch, any
// number for a list. "client" seeds the registry with a client's ID, Noise public
// key and tunnel address, enabled, once per client. Fields that hold objects (destinationPolicy,
// keepalive, wgPeers, clients with security settings) are set in the JSON
// config: caddy adapt gives it from the Caddyfile.
func parseGlobal(d *caddyfile.Dispenser, _ any) (any, error) {
	d.Next() // the option's name
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	var obj objectWriter
	var clients []json.RawMessage
	for d.NextBlock(0) {
		name := d.Val()
		args := d.RemainingArgs()
		if name == "client" {
			if len(args) != 3 {
				return nil, d.Errf("client: want <id> <publicKey> <assignedIp>")
			}
			c, _ := json.Marshal(map[string]any{"clientId": args[0], "publicKey": args[1], "assignedIp": args[2], "enabled": true})
			clients = append(clients, c)
			continue
		}
		val, err := fieldValue(name, args)
		if err != nil {
			return nil, d.Errf("%s: %v", name, err)
		}
		obj.add(name, val)
	}
	if len(clients) > 0 {
		list, _ := json.Marshal(clients)
		obj.add("clients", list)
	}
	return httpcaddyfile.App{Name: "warren", Value: obj.bytes()}, nil
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// fieldValue is the JSON value of a Caddyfile line for the config field
// named name. A name no field has is written as a string: the hub's strict
// config decoding refuses it with a suggestion.
func fieldValue(name string, args []string) ([]byte, error) {
	t := reflect.TypeFor[string]()
	if name == "registryFile" {
		return oneString(args)
	}
	if f, ok := configField(name); ok {
		t = f
	}
	isText := func(t reflect.Type) bool { return reflect.PointerTo(t).Implements(textUnmarshaler) }
	switch {
	case isText(t) || t.Kind() == reflect.String:
		return oneString(args)
	case t.Kind() == reflect.Bool:
		switch {
		case len(args) == 0:
			return []byte("true"), nil
		case len(args) == 1 && (args[0] == "true" || args[0] == "false"):
			return []byte(args[0]), nil
		}
		return nil, errf("want no argument, true or false")
	case t.Kind() == reflect.Int:
		if len(args) != 1 {
			return nil, errf("want one number")
		}
		if _, err := strconv.Atoi(args[0]); err != nil {
			return nil, errf("want a number, got %q", args[0])
		}
		return []byte(args[0]), nil
	case t.Kind() == reflect.Slice && (isText(t.Elem()) || t.Elem().Kind() == reflect.String):
		return json.Marshal(args)
	}
	return nil, errf("holds an object: set it in the JSON config (caddy adapt gives the JSON of this Caddyfile)")
}

// configField returns the type of the ServerConfig field whose JSON name is
// name.
func configField(name string) (reflect.Type, bool) {
	t := reflect.TypeFor[warren.ServerConfig]()
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == name && tag != "-" {
			return f.Type, true
		}
	}
	return nil, false
}

func oneString(args []string) ([]byte, error) {
	if len(args) != 1 {
		return nil, errf("want one value")
	}
	return json.Marshal(args[0])
}

func errf(format string, a ...any) error { return fmt.Errorf(format, a...) }
