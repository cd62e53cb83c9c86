package admin

import (
	"crypto/subtle"
	_ "embed"
	"net/http"
	"strings"
	"time"

	"github.com/warrenvpn/warren"
	"github.com/warrenvpn/warren/telemetry"
)

//go:embed status.html
var statusHTML []byte

// StatusSnapshot is what the status page polls: the hub's status and
// counters and its live sessions at one moment.
type StatusSnapshot struct {
	Time       time.Time           `json:"time"`
	Status     warren.ServerStatus `json:"status"`
	Statistics warren.Statistics   `json:"statistics"`
	Clients    []LiveClient        `json:"clients"`
}

// LiveClient is one live session on the status page: what ListClients says
// of it and its link quality as the hub sees it (Server.ClientTelemetry):
// health and loss from the client's keepalives, RTT only when measured.
// WireGuard sessions have no Warren keepalives: their health is unknown.
type LiveClient struct {
	warren.ClientInfo
	Quality telemetry.Quality `json:"quality"`
}

// liveClients lists srv's live sessions with their link quality.
func liveClients(srv *warren.Server) []LiveClient {
	out := []LiveClient{}
	tele := map[string][]warren.SessionTelemetry{}
	for _, ci := range srv.ListClients() {
		list, ok := tele[ci.ClientID]
		if !ok {
			// A client gone since ListClients has no telemetry: its
			// quality stays unknown.
			list, _ = srv.ClientTelemetry(ci.ClientID)
			tele[ci.ClientID] = list
		}
		lc := LiveClient{ClientInfo: ci}
		for _, st := range list {
			if st.Transport == ci.Transport && st.RemoteAddr == ci.RemoteAddr.String() && st.ConnectedSince.Equal(ci.ConnectedSince) {
				lc.Quality = st.Quality
				break
			}
		}
		out = append(out, lc)
	}
	return out
}

// StatusPage returns a handler for a live status page of srv: one HTML page
// with no external assets (its script is inline) that shows the hub's
// transports and counters, the live clients (ID, address, transport, remote
// address, since, bytes, link health, smoothed RTT and keepalive loss) and a
// throughput plot for the hub and each client over the last five minutes,
// polling a JSON snapshot every two seconds.
//
// Paths ending in "/status.json" answer the StatusSnapshot; every other
// path answers the page, which fetches status.json relative to itself, so the
// handler can be mounted under any prefix (with http.StripPrefix or not).
//
// The page shows client addresses and keys: serve it on a Unix socket or
// wrap it in RequireToken before binding it to a TCP address.
func StatusPage(srv *warren.Server) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, &Error{Status: http.StatusMethodNotAllowed, Code: CodeMethodNotAllowed, Message: "the status page takes GET"})
			return
		}
		if strings.HasSuffix(r.URL.Path, "/status.json") {
			writeJSON(w, http.StatusOK, StatusSnapshot{
				Time:       time.Now().UTC(),
				Status:     srv.Status(),
				Statistics: srv.Statistics(),
				Clients:    liveClients(srv),
			})
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		// The page needs nothing from elsewhere: say so to the browser.
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.Write(statusHTML)
	})
}

// RequireToken lets a request through to h only when it carries token, as
// "Authorization: Bearer <token>" or as the query parameter token=<token>
// (the status page passes its own on to status.json). Others get 401. The
// comparison takes constant time. An empty token refuses every request.
func RequireToken(token string, h http.Handler) http.Handler {
	want := []byte(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.URL.Query().Get("token")
		if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			got = bearer
		}
		if len(want) == 0 || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="warren"`)
			writeError(w, &Error{Status: http.StatusUnauthorized, Code: CodeUnauthorized, Message: "a valid token is required"})
			return
		}
		h.ServeHTTP(w, r)
	})
}
