// Package admin serves a warren hub's methods as HTTP+JSON, for the warren
// command and for any program that embeds a hub and wants to manage it from
// outside the process. The library never opens an admin endpoint on its own:
// the embedding program mounts Handler where it wants, typically on a Unix
// socket from ListenUnix, whose file mode (0600) is the access control.
//
// # URL scheme
//
// The API is RPC-style: every hub method of the warren package is one URL,
// /v1/<Method>, with the method's name as spelt in Go. A call is a POST whose
// body is one JSON object holding the method's arguments, under the JSON
// names the warren package uses; the answer is the method's result as the
// warren package marshals it. Methods that take no arguments also answer GET,
// so
//
//	curl --unix-socket /run/warren/admin.sock http://warren/v1/Status
//
// works. The methods and their request bodies:
//
//	CreateClient           a ClientSpec                          → ClientBundle (holds private keys: shown once)
//	GetClient              {"clientId"}                           → ClientEntry
//	ListRegisteredClients  {}                                     → [ClientEntry]
//	UpdateClient           {"clientId", ...the ClientUpdate fields} → ClientEntry
//	EnableClient           {"clientId"}                           → {}
//	DisableClient          {"clientId"}                           → {}
//	RotateClientKey        {"clientId"}                           → ClientBundle
//	ExportClientConfig     {"clientId", "format": "native"|"wireguard"} → {"format", "config"}
//	RemoveClient           {"clientId"}                           → {}
//	ListClients            {}                                     → [ClientInfo]   (live sessions)
//	DisconnectClient       {"clientId", "reason"}                 → {}
//	Status                 {}                                     → ServerStatus
//	Statistics             {}                                     → Statistics
//	AddWGPeer              a WGPeer                               → {}
//	RemoveWGPeer           {"publicKey"}                          → {}
//	ListWGPeers            {}                                     → [WGPeer]
//	WireGuardServerConfig  {"nat", "uplink"} (WGServerConfigOptions) → {"config"} (holds the hub's WireGuard private key)
//	SetClientRateLimit     {"clientId", "bytesPerSec", "burstBytes"} → {}
//	RemoveClientRateLimit  {"clientId"}                           → {}
//	ClientTelemetry        {"clientId"}                           → [SessionTelemetry] (live sessions, oldest first)
//	Telemetry              {}                                     → TelemetryResult
//
// Request bodies are decoded strictly: an unknown field, a second JSON value
// or a body over 1 MiB is refused with 400 and changes nothing.
//
// # Errors
//
// A failed call answers with an HTTP error status and
//
//	{"error": {"code": "unknown_client", "message": "warren: unknown client: \"x\""}}
//
// The code is stable; the message is for people. invalid_config errors also
// carry "field", "value" and "reason" from the hub's *warren.ConfigError.
//
//	code                status  when
//	bad_request         400     malformed JSON, unknown field, wrong type
//	invalid_config      400     the hub refused a value (*warren.ConfigError)
//	unknown_client      404     no such client (or static WireGuard peer)
//	unknown_method      404     no such method
//	method_not_allowed  405     GET on a method that takes arguments
//	client_exists       409     the ID, key or address is taken
//	client_disabled     409     the client is disabled
//	pool_exhausted      409     the subnet has no free address
//	not_connected       409     the client has no live session
//	not_supported       501     the hub does not run the part needed (e.g. WireGuard)
//	unavailable         503     the request was cancelled or timed out
//	internal            500     anything else (a failing Store, ...)
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/warrenvpn/warren"
	"github.com/warrenvpn/warren/telemetry"
)

// maxBody bounds a request body.
const maxBody = 1 << 20

// Error codes, stable across versions.
const (
	CodeBadRequest       = "bad_request"
	CodeInvalidConfig    = "invalid_config"
	CodeUnknownClient    = "unknown_client"
	CodeUnknownMethod    = "unknown_method"
	CodeMethodNotAllowed = "method_not_allowed"
	CodeClientExists     = "client_exists"
	CodeClientDisabled   = "client_disabled"
	CodePoolExhausted    = "pool_exhausted"
	CodeNotConnected     = "not_connected"
	CodeNotSupported     = "not_supported"
	CodeUnavailable      = "unavailable"
	CodeInternal         = "internal"
	CodeUnauthorized     = "unauthorized"
)

// Error is the error object of a failed call, as sent on the wire and as
// returned by Client.
type Error struct {
	// Status is the HTTP status; it is not part of the JSON object.
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	// Field, Value and Reason come from a *warren.ConfigError.
	Field  string `json:"field,omitempty"`
	Value  string `json:"value,omitempty"`
	Reason string `json:"reason,omitempty"`
}

func (e *Error) Error() string {
	return "admin: " + e.Code + ": " + e.Message
}

// ErrorFor maps an error returned by a warren.Server method to its code and
// HTTP status.
func ErrorFor(err error) *Error {
	e := &Error{Message: err.Error()}
	var ce *warren.ConfigError
	isConfig := errors.As(err, &ce)
	if isConfig {
		e.Field, e.Value, e.Reason = ce.Field, ce.Value, ce.Reason
	}
	switch {
	case errors.Is(err, warren.ErrUnknownClient):
		e.Status, e.Code = http.StatusNotFound, CodeUnknownClient
	case errors.Is(err, warren.ErrClientExists):
		e.Status, e.Code = http.StatusConflict, CodeClientExists
	case errors.Is(err, warren.ErrClientDisabled):
		e.Status, e.Code = http.StatusConflict, CodeClientDisabled
	case errors.Is(err, warren.ErrPoolExhausted):
		e.Status, e.Code = http.StatusConflict, CodePoolExhausted
	case errors.Is(err, warren.ErrNotConnected):
		e.Status, e.Code = http.StatusConflict, CodeNotConnected
	case errors.Is(err, warren.ErrNotSupported):
		e.Status, e.Code = http.StatusNotImplemented, CodeNotSupported
	case isConfig:
		e.Status, e.Code = http.StatusBadRequest, CodeInvalidConfig
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		e.Status, e.Code = http.StatusServiceUnavailable, CodeUnavailable
	default:
		e.Status, e.Code = http.StatusInternalServerError, CodeInternal
	}
	return e
}

// Request bodies that are not a warren type.
type (
	clientID struct {
		ClientID string `json:"clientId"`
	}
	updateRequest struct {
		ClientID string `json:"clientId"`
		warren.ClientUpdate
	}
	exportRequest struct {
		ClientID string              `json:"clientId"`
		Format   warren.ExportFormat `json:"format,omitempty"`
	}
	disconnectRequest struct {
		ClientID string `json:"clientId"`
		Reason   string `json:"reason,omitempty"`
	}
	publicKey struct {
		PublicKey warren.Key `json:"publicKey"`
	}
	rateLimitRequest struct {
		ClientID string `json:"clientId"`
		warren.RateLimit
	}
	empty struct{}
)

// ExportResult is the answer of ExportClientConfig: Config is the file's
// text (JSON for native, a .conf for wireguard).
type ExportResult struct {
	Format warren.ExportFormat `json:"format"`
	Config string              `json:"config"`
}

// ServerConfResult is the answer of WireGuardServerConfig: Config is the
// hub's WireGuard server .conf, with its private key.
type ServerConfResult struct {
	Config string `json:"config"`
}

// TelemetryResult is the answer of Telemetry: warren.TelemetrySnapshot
// under camelCase JSON names.
type TelemetryResult struct {
	// Server holds the hub-wide counters.
	Server telemetry.Statistics `json:"server"`
	// Clients holds each connected client, sorted by ID.
	Clients []ClientTelemetry `json:"clients"`
}

// ClientTelemetry is one connected client in a TelemetryResult: its
// sessions' counters summed, and the link quality of its newest session.
type ClientTelemetry struct {
	ClientID   string               `json:"clientId"`
	Statistics telemetry.Statistics `json:"statistics"`
	Quality    telemetry.Quality    `json:"quality"`
}

// telemetryResult converts a snapshot.
func telemetryResult(snap warren.TelemetrySnapshot) TelemetryResult {
	res := TelemetryResult{Server: snap.Server, Clients: make([]ClientTelemetry, 0, len(snap.Clients))}
	for _, c := range snap.Clients {
		res.Clients = append(res.Clients, ClientTelemetry{ClientID: c.ID, Statistics: c.Statistics, Quality: c.Quality})
	}
	return res
}

// method is one served hub method: noArgs methods also answer GET.
type method struct {
	noArgs bool
	call   func(ctx context.Context, s *warren.Server, body []byte) (any, error)
}

// call1 builds a method that decodes its request into a Req.
func call1[Req any](fn func(ctx context.Context, s *warren.Server, req Req) (any, error)) method {
	return method{call: func(ctx context.Context, s *warren.Server, body []byte) (any, error) {
		var req Req
		if err := decode(body, &req); err != nil {
			return nil, err
		}
		return fn(ctx, s, req)
	}}
}

// call0 builds a method without arguments; its body must be empty or {}.
func call0(fn func(ctx context.Context, s *warren.Server) (any, error)) method {
	m := call1(func(ctx context.Context, s *warren.Server, _ empty) (any, error) { return fn(ctx, s) })
	m.noArgs = true
	return m
}

func need(id string) error {
	if id == "" {
		return &Error{Status: http.StatusBadRequest, Code: CodeBadRequest, Message: "clientId is required"}
	}
	return nil
}

var methods = map[string]method{
	"CreateClient": call1(func(ctx context.Context, s *warren.Server, spec warren.ClientSpec) (any, error) {
		return s.CreateClient(ctx, spec)
	}),
	"GetClient": call1(func(ctx context.Context, s *warren.Server, r clientID) (any, error) {
		if err := need(r.ClientID); err != nil {
			return nil, err
		}
		return s.GetClient(ctx, r.ClientID)
	}),
	"ListRegisteredClients": call0(func(ctx context.Context, s *warren.Server) (any, error) {
		return nonNil(s.ListRegisteredClients(ctx))
	}),
	"UpdateClient": call1(func(ctx context.Context, s *warren.Server, r updateRequest) (any, error) {
		if err := need(r.ClientID); err != nil {
			return nil, err
		}
		return s.UpdateClient(ctx, r.ClientID, r.ClientUpdate)
	}),
	"EnableClient": call1(func(ctx context.Context, s *warren.Server, r clientID) (any, error) {
		if err := need(r.ClientID); err != nil {
			return nil, err
		}
		return empty{}, s.EnableClient(ctx, r.ClientID)
	}),
	"DisableClient": call1(func(ctx context.Context, s *warren.Server, r clientID) (any, error) {
		if err := need(r.ClientID); err != nil {
			return nil, err
		}
		return empty{}, s.DisableClient(ctx, r.ClientID)
	}),
	"RotateClientKey": call1(func(ctx context.Context, s *warren.Server, r clientID) (any, error) {
		if err := need(r.ClientID); err != nil {
			return nil, err
		}
		return s.RotateClientKey(ctx, r.ClientID)
	}),
	"ExportClientConfig": call1(func(ctx context.Context, s *warren.Server, r exportRequest) (any, error) {
		if err := need(r.ClientID); err != nil {
			return nil, err
		}
		if r.Format == "" {
			r.Format = warren.ExportNative
		}
		text, err := s.ExportClientConfig(ctx, r.ClientID, r.Format)
		return ExportResult{Format: r.Format, Config: text}, err
	}),
	"RemoveClient": call1(func(ctx context.Context, s *warren.Server, r clientID) (any, error) {
		if err := need(r.ClientID); err != nil {
			return nil, err
		}
		return empty{}, s.RemoveClient(ctx, r.ClientID)
	}),
	"ListClients": call0(func(ctx context.Context, s *warren.Server) (any, error) {
		return nonNil(s.ListClients(), nil)
	}),
	"DisconnectClient": call1(func(ctx context.Context, s *warren.Server, r disconnectRequest) (any, error) {
		if err := need(r.ClientID); err != nil {
			return nil, err
		}
		return empty{}, s.DisconnectClient(r.ClientID, r.Reason)
	}),
	"Status": call0(func(ctx context.Context, s *warren.Server) (any, error) {
		return s.Status(), nil
	}),
	"Statistics": call0(func(ctx context.Context, s *warren.Server) (any, error) {
		return s.Statistics(), nil
	}),
	"AddWGPeer": call1(func(ctx context.Context, s *warren.Server, p warren.WGPeer) (any, error) {
		return empty{}, s.AddWGPeer(p)
	}),
	"RemoveWGPeer": call1(func(ctx context.Context, s *warren.Server, r publicKey) (any, error) {
		return empty{}, s.RemoveWGPeer(r.PublicKey)
	}),
	"ListWGPeers": call0(func(ctx context.Context, s *warren.Server) (any, error) {
		return nonNil(s.ListWGPeers(), nil)
	}),
	"WireGuardServerConfig": call1(func(ctx context.Context, s *warren.Server, o warren.WGServerConfigOptions) (any, error) {
		text, err := s.WireGuardServerConfig(ctx, o)
		return ServerConfResult{Config: text}, err
	}),
	"SetClientRateLimit": call1(func(ctx context.Context, s *warren.Server, r rateLimitRequest) (any, error) {
		if err := need(r.ClientID); err != nil {
			return nil, err
		}
		return empty{}, s.SetClientRateLimit(ctx, r.ClientID, r.RateLimit)
	}),
	"RemoveClientRateLimit": call1(func(ctx context.Context, s *warren.Server, r clientID) (any, error) {
		if err := need(r.ClientID); err != nil {
			return nil, err
		}
		return empty{}, s.RemoveClientRateLimit(ctx, r.ClientID)
	}),
	"ClientTelemetry": call1(func(ctx context.Context, s *warren.Server, r clientID) (any, error) {
		if err := need(r.ClientID); err != nil {
			return nil, err
		}
		return s.ClientTelemetry(r.ClientID)
	}),
	"Telemetry": call0(func(ctx context.Context, s *warren.Server) (any, error) {
		return telemetryResult(s.Telemetry()), nil
	}),
}

// Methods returns the names of the served methods.
func Methods() []string {
	out := make([]string, 0, len(methods))
	for name := range methods {
		out = append(out, name)
	}
	return out
}

// nonNil makes a nil list marshal as [] rather than null.
func nonNil[T any](list []T, err error) ([]T, error) {
	if list == nil {
		list = []T{}
	}
	return list, err
}

// decode reads one JSON object strictly; an empty body is an empty object.
func decode(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("decoding request: " + err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("decoding request: data after the JSON object")
	}
	return nil
}

func badRequest(msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: CodeBadRequest, Message: msg}
}

// Handler returns the admin API of srv under /v1/. logger, if not nil,
// receives one line per failed call.
func Handler(srv *warren.Server, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &handler{srv: srv, log: logger}
}

type handler struct {
	srv *warren.Server
	log *slog.Logger
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, ok := strings.CutPrefix(r.URL.Path, "/v1/")
	m, known := methods[name]
	if !ok || !known {
		writeError(w, &Error{Status: http.StatusNotFound, Code: CodeUnknownMethod, Message: fmt.Sprintf("no method %q: use POST /v1/<Method>", r.URL.Path)})
		return
	}
	switch {
	case r.Method == http.MethodPost:
	case r.Method == http.MethodGet && m.noArgs:
	default:
		allow := "POST"
		if m.noArgs {
			allow = "GET, POST"
		}
		w.Header().Set("Allow", allow)
		writeError(w, &Error{Status: http.StatusMethodNotAllowed, Code: CodeMethodNotAllowed, Message: name + " takes " + allow})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeError(w, badRequest("reading request: "+err.Error()))
		return
	}
	res, err := m.call(r.Context(), h.srv, body)
	if err != nil {
		var ae *Error
		if !errors.As(err, &ae) {
			ae = ErrorFor(err)
		}
		h.log.Info("admin call failed", "method", name, "code", ae.Code, "err", err)
		writeError(w, ae)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		writeError(w, &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "encoding result: " + err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, e *Error) {
	b, _ := json.Marshal(struct {
		Error *Error `json:"error"`
	}{e})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(e.Status)
	w.Write(append(b, '\n'))
}
