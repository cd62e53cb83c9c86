package etcdstore

import (
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// testEtcd is a real etcd server run in the test process on loopback.
type testEtcd struct {
	t         *testing.T
	dir       string
	clientURL url.URL
	peerURL   url.URL
	e         *embed.Etcd
}

// freePort returns a loopback port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startEtcd starts an etcd on loopback ports in a temporary directory; the
// test's cleanup stops it.
func startEtcd(t *testing.T) *testEtcd {
	t.Helper()
	te := &testEtcd{
		t:         t,
		dir:       t.TempDir(),
		clientURL: url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", freePort(t))},
		peerURL:   url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", freePort(t))},
	}
	te.start()
	t.Cleanup(te.stop)
	return te
}

// endpoint is the client URL.
func (te *testEtcd) endpoint() string { return te.clientURL.String() }

// start runs the server (again, after stop, on the same directory and ports).
func (te *testEtcd) start() {
	te.t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = te.dir
	cfg.ListenClientUrls = []url.URL{te.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{te.clientURL}
	cfg.ListenPeerUrls = []url.URL{te.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{te.peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{"stderr"}
	var e *embed.Etcd
	var err error
	// The ports were free a moment ago; after a restart the old sockets
	// may need a moment to go.
	deadline := time.Now().Add(30 * time.Second)
	for {
		e, err = embed.StartEtcd(cfg)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		te.t.Fatalf("starting etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Close()
		te.t.Fatal("etcd not ready after 60 s")
	}
	te.e = e
}

// stop stops the server; its data stays for start.
func (te *testEtcd) stop() {
	if te.e != nil {
		te.e.Close()
		te.e = nil
	}
}
