package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Client calls the admin API of a hub over its Unix socket.
type Client struct {
	http *http.Client
	base string
}

// NewClient returns a Client for the admin socket at path. It opens nothing
// until the first call.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}
	return &Client{http: &http.Client{Transport: tr, Timeout: time.Minute}, base: "http://warren/v1/"}
}

// Call invokes method with req as its JSON body (nil: no arguments) and
// decodes the result into res (nil: discarded). A failed call returns an
// *Error with the hub's code.
func (c *Client) Call(ctx context.Context, method string, req, res any) error {
	body := []byte("{}")
	if req != nil {
		var err error
		if body, err = json.Marshal(req); err != nil {
			return fmt.Errorf("admin: encoding %s request: %w", method, err)
		}
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+method, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(hr)
	if err != nil {
		return fmt.Errorf("admin: %s: %w", method, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("admin: %s: reading answer: %w", method, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error *Error `json:"error"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error == nil {
			return fmt.Errorf("admin: %s: %s: %s", method, resp.Status, bytes.TrimSpace(b))
		}
		e.Error.Status = resp.StatusCode
		return e.Error
	}
	if res == nil {
		return nil
	}
	if err := json.Unmarshal(b, res); err != nil {
		return fmt.Errorf("admin: %s: decoding answer: %w", method, err)
	}
	return nil
}

// Close releases the client's idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }
