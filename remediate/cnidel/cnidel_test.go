package cnidel

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

// pluginDir is Debian's containernetworking-plugins.
const pluginDir = "/usr/lib/cni"

// fixture is a CNI network with its leases and libcni cache in the test's
// directory: bridge (cnidel0) + host-local + portmap, as a kubeadm node's.
type fixture struct {
	dir, data, cache string
	list             *libcni.NetworkConfigList
	cni              *libcni.CNIConfig
	d                *Deleter
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	netnstest.Require(t)
	for _, p := range []string{"bridge", "host-local", "portmap"} {
		if _, err := os.Stat(filepath.Join(pluginDir, p)); err != nil {
			netnstest.Unavailable(t, "CNI plugin "+p+" (containernetworking-plugins): "+err.Error())
		}
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		netnstest.Unavailable(t, "iptables (portmap needs it): "+err.Error())
	}
	f := &fixture{dir: t.TempDir()}
	f.data, f.cache = filepath.Join(f.dir, "networks"), filepath.Join(f.dir, "cache")
	conf := fmt.Sprintf(`{"cniVersion":"0.4.0","name":"delnet","plugins":[
{"type":"bridge","bridge":"cnidel0","isGateway":true,"ipMasq":false,
 "ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.79.0.0/29"}]]}},
{"type":"portmap","capabilities":{"portMappings":true}}]}`, f.data)
	var err error
	if f.list, err = libcni.ConfListFromBytes([]byte(conf)); err != nil {
		t.Fatal(err)
	}
	f.cni = libcni.NewCNIConfigWithCacheDir([]string{pluginDir}, f.cache, nil)
	f.d = &Deleter{BinDirs: []string{pluginDir}, CacheDir: f.cache}
	t.Cleanup(func() { exec.Command("ip", "link", "del", "cnidel0").Run() })
	return f
}

// add attaches a new namespace, name, as a runtime does (CNI ADD through
// libcni, with a host port), and returns its address.
func (f *fixture) add(t *testing.T, name string) string {
	t.Helper()
	netnstest.NamedNetns(t, name)
	rt := &libcni.RuntimeConf{ContainerID: "sb-" + name, NetNS: "/var/run/netns/" + name, IfName: "eth0",
		Args:           [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "shop"}, {"K8S_POD_NAME", name}},
		CapabilityArgs: map[string]any{"portMappings": []map[string]any{{"hostPort": 18080 + len(name), "containerPort": 80, "protocol": "tcp"}}}}
	res, err := f.cni.AddNetworkList(context.Background(), f.list, rt)
	if err != nil {
		t.Fatalf("CNI ADD %s: %v", name, err)
	}
	r, err := types100.GetResult(res)
	if err != nil || len(r.IPs) != 1 {
		t.Fatalf("CNI ADD %s: result %v (%v), want one address", name, res, err)
	}
	return r.IPs[0].Address.IP.String()
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func iptables(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("iptables", "-t", "nat", "-S").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables -t nat -S: %v\n%s", err, out)
	}
	return string(out)
}

// TestDel: the DEL a runtime never ran releases the lease, the cache entry
// and portmap's chains of the lost sandbox, and nothing of a live one; it
// is refused while the namespace is still there, and a second one finds
// nothing to do.
func TestDel(t *testing.T) {
	f := newFixture(t)
	lostIP := f.add(t, "lost")
	liveIP := f.add(t, "live")
	lost := Attachment{Network: "delnet", ContainerID: "sb-lost", IfName: "eth0"}
	lease := filepath.Join(f.data, "delnet", lostIP)
	entry := filepath.Join(f.cache, "results", "delnet-sb-lost-eth0")
	if !exists(lease) || !exists(entry) || !strings.Contains(iptables(t), "sb-lost") {
		t.Fatalf("after ADD: lease %v, cache entry %v, portmap rules:\n%s", exists(lease), exists(entry), iptables(t))
	}

	// While the namespace is pinned, no plugin may touch it.
	if _, err := f.d.Del(context.Background(), lost); !errors.Is(err, ErrNamespaceLeft) {
		t.Fatalf("Del with the namespace pinned: %v, want ErrNamespaceLeft", err)
	}
	if !exists(lease) || !exists(entry) {
		t.Fatal("a refused Del changed something")
	}

	// The sandbox is lost: its namespace goes (with its veth), the DEL
	// never runs; the lease, the cache entry and the rules stay.
	netnstest.IP(t, "netns", "del", "lost")
	if !exists(lease) || !exists(entry) {
		t.Fatal("the lease or the cache entry went with the namespace: no missed DEL to finish")
	}
	r, err := f.d.Del(context.Background(), lost)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Leases) != 1 || r.Leases[0] != lease {
		t.Errorf("released %v, want %s", r.Leases, lease)
	}
	if exists(lease) || exists(entry) || strings.Contains(iptables(t), "sb-lost") {
		t.Errorf("after Del: lease %v, cache entry %v, portmap rules:\n%s", exists(lease), exists(entry), iptables(t))
	}
	// The live sandbox keeps everything.
	if !exists(filepath.Join(f.data, "delnet", liveIP)) || !exists(filepath.Join(f.cache, "results", "delnet-sb-live-eth0")) ||
		!strings.Contains(iptables(t), "sb-live") {
		t.Errorf("the live sandbox lost its lease, cache entry or rules:\n%s", iptables(t))
	}
	if _, err := f.d.Del(context.Background(), lost); !errors.Is(err, ErrNoCacheEntry) {
		t.Errorf("a second Del: %v, want ErrNoCacheEntry", err)
	}
	// The freed address is handed out again.
	if again := f.add(t, "again"); again != lostIP {
		t.Logf("the next ADD got %s (host-local hands out the next free one after the last reserved)", again)
	}
}

// TestReleaseLease: a lease without a cache entry is released as
// host-local does, under its lock file, only while it names the same
// container.
func TestReleaseLease(t *testing.T) {
	f := newFixture(t)
	ip := f.add(t, "bare")
	dir := filepath.Join(f.data, "delnet")
	if err := f.d.ReleaseLease(dir, ip, "sb-other"); !errors.Is(err, ErrLeaseChanged) {
		t.Errorf("ReleaseLease for another container: %v, want ErrLeaseChanged", err)
	}
	if !exists(filepath.Join(dir, ip)) {
		t.Fatal("a refused ReleaseLease removed the lease")
	}
	for _, bad := range []string{"../lock", "10.79.0.02", ""} {
		if err := f.d.ReleaseLease(dir, bad, "sb-bare"); err == nil {
			t.Errorf("ReleaseLease(%q): nil, want an error", bad)
		}
	}
	if err := f.d.ReleaseLease(dir, ip, "sb-bare"); err != nil || exists(filepath.Join(dir, ip)) {
		t.Errorf("ReleaseLease: %v, lease still there: %v", err, exists(filepath.Join(dir, ip)))
	}
	if err := f.d.ReleaseLease(dir, ip, "sb-bare"); err != nil {
		t.Errorf("releasing a lease already gone: %v, want nil", err)
	}
}
