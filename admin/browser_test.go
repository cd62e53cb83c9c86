package admin_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/warrenvpn/warren"
	"github.com/warrenvpn/warren/admin"
)

// findChromium returns the path of a Chromium (or Chrome) binary, or "".
func findChromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// newBrowser starts a headless Chromium with a fresh profile, stopped at the
// end of the test.
func newBrowser(t *testing.T, path string) context.Context {
	t.Helper()
	actx, acancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // tests may run as root, where Chromium's sandbox refuses to start
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancel()
		acancel()
	})
	// Start the browser now, on a context without a deadline (a deadline on
	// the first Run would bound the browser's whole life).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	return ctx
}

// trafficTo keeps a client sending to addr through the hub until the test
// ends or the client's session is gone.
func trafficTo(t *testing.T, cl *warren.Client, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := cl.Dial(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 16<<10)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := conn.Write(buf); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		conn.Close()
		wg.Wait()
	})
}

// sink accepts connections on ln and reads them until the test ends.
func sink(t *testing.T, ln net.Listener) {
	t.Helper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(io.Discard, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

func TestStatusPageInChromium(t *testing.T) {
	chromium := findChromium()
	if chromium == "" {
		t.Skip("no Chromium binary (chromium, chromium-browser, google-chrome) on PATH: install the chromium package to run the status page in a browser")
	}
	keys, _ := warren.GenerateKeypair()
	srv, err := warren.NewServer(warren.ServerConfig{
		ListenAddr: "127.0.0.1:0",
		PrivateKey: keys.PrivateKey,
		Subnet:     netip.MustParsePrefix("10.78.0.0/24"),
	})
	if err != nil {
		t.Fatal(err)
	}
	startCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Start(startCtx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	// Two clients send to a service on the hub's own tunnel address.
	ln, err := srv.Listen("tcp", ":9000")
	if err != nil {
		t.Fatal(err)
	}
	sink(t, ln)
	target := netip.AddrPortFrom(srv.HubIP(), 9000).String()
	for _, id := range []string{"alpha", "bravo"} {
		b, err := srv.CreateClient(startCtx, warren.ClientSpec{ClientID: id})
		if err != nil {
			t.Fatal(err)
		}
		trafficTo(t, connect(t, b), target)
	}

	ts := httptest.NewServer(admin.RequireToken("s3cret-token", admin.StatusPage(srv)))
	t.Cleanup(ts.Close)

	browser := newBrowser(t, chromium)
	run := func(what string, a chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := context.WithTimeout(browser, 40*time.Second)
		defer cancel()
		if err := chromedp.Do(ctx, a); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(expr string) int {
		t.Helper()
		ctx, cancel := context.WithTimeout(browser, 20*time.Second)
		defer cancel()
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](expr))
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		return n
	}
	poll := func(what, expr string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(browser, 40*time.Second)
		defer cancel()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second))); err != nil {
			t.Fatalf("waiting for %s (%s): %v", what, expr, err)
		}
	}

	run("loading the page", chromedp.Navigate(ts.URL+"/?token=s3cret-token"))
	poll("both clients listed",
		`document.querySelector('tr[data-client="alpha"]') !== null && document.querySelector('tr[data-client="bravo"]') !== null`)
	const (
		hubPoints   = `Number(document.getElementById("hubplot").dataset.points || 0)`
		alphaPoints = `Number(document.querySelector('tr[data-client="alpha"] canvas')?.dataset.points || 0)`
	)
	poll("the plots have points", hubPoints+` >= 1 && `+alphaPoints+` >= 1`)
	h, a := eval(hubPoints), eval(alphaPoints)
	poll("the plots get new points", fmt.Sprintf(`%s > %d && %s > %d`, hubPoints, h, alphaPoints, a))
	if got := eval(`document.querySelectorAll("#clients tr").length`); got != 2 {
		t.Fatalf("the page lists %d clients, want 2", got)
	}
	// The clients' bytes reach the page.
	poll("alpha's bytes in", `document.querySelector('tr[data-client="alpha"] td:nth-child(6)').textContent !== "0 B"`)

	if err := srv.DisableClient(startCtx, "bravo"); err != nil {
		t.Fatal(err)
	}
	poll("the disabled client gone from the page",
		`document.querySelector('tr[data-client="bravo"]') === null && document.querySelector('tr[data-client="alpha"]') !== null`)
	if got := eval(`Number(document.getElementById("nclients").textContent)`); got != 1 {
		t.Fatalf("live clients count on the page: %d, want 1", got)
	}

	ctx, cancel2 := context.WithTimeout(browser, 20*time.Second)
	defer cancel2()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(ts.URL+"/?token=wrong"))
	if err != nil {
		t.Fatalf("loading the page with a wrong token: %v", err)
	}
	if resp.Status != 401 {
		t.Fatalf("the page with a wrong token: HTTP %d, want 401", resp.Status)
	}
}
