package cni

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
)

func TestParseCNIConf(t *testing.T) {
	tests := []struct {
		file, body                string
		wantName, wantType        string
		wantAgents, wantPlugins   []string
		wantKnown, wantNil, isErr bool
	}{
		{file: "10-calico.conflist", body: `{"name":"k8s-pod-network","cniVersion":"0.3.1","plugins":[{"type":"calico","ipam":{"type":"calico-ipam"}},{"type":"bandwidth"},{"type":"portmap"}]}`,
			wantName: "k8s-pod-network", wantType: "calico", wantAgents: []string{"calico-node", "calico-felix", "bird", "bird6"},
			wantPlugins: []string{"calico", "bandwidth", "portmap"}, wantKnown: true},
		{file: "05-cilium.conflist", body: `{"cniVersion":"0.3.1","name":"cilium","plugins":[{"type":"cilium-cni","enable-debug":false}]}`,
			wantName: "cilium", wantType: "cilium", wantAgents: []string{"cilium-agent"}, wantPlugins: []string{"cilium-cni"}, wantKnown: true},
		{file: "10-flannel.conflist", body: `{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","delegate":{"hairpinMode":true}},{"type":"portmap"}]}`,
			wantName: "cbr0", wantType: "flannel", wantAgents: []string{"flanneld"}, wantPlugins: []string{"flannel", "portmap"}, wantKnown: true},
		{file: "10-aws.conflist", body: `{"cniVersion":"0.4.0","name":"aws-cni","plugins":[{"name":"aws-cni","type":"aws-cni"},{"type":"egress-cni"},{"type":"portmap"}]}`,
			wantName: "aws-cni", wantType: "aws-vpc", wantAgents: []string{"aws-k8s-agent"}, wantPlugins: []string{"aws-cni", "egress-cni", "portmap"}, wantKnown: true},
		{file: "10-weave.conflist", body: `{"cniVersion":"0.3.0","name":"weave","plugins":[{"name":"weave","type":"weave-net","hairpinMode":true},{"type":"portmap"}]}`,
			wantName: "weave", wantType: "weave", wantAgents: []string{"weaver"}, wantPlugins: []string{"weave-net", "portmap"}, wantKnown: true},
		{file: "10-kuberouter.conflist", body: `{"cniVersion":"0.3.0","name":"mynet","plugins":[{"name":"kubernetes","type":"bridge","bridge":"kube-bridge","isDefaultGateway":true}]}`,
			wantName: "mynet", wantType: "kube-router", wantAgents: []string{"kube-router"}, wantPlugins: []string{"bridge"}, wantKnown: true},
		{file: "10-podnet.conflist", body: `{"cniVersion":"1.0.0","name":"podnet","plugins":[{"type":"bridge","bridge":"cni0","ipam":{"type":"host-local"}},{"type":"portmap"}]}`,
			wantName: "podnet", wantType: "bridge", wantPlugins: []string{"bridge", "portmap"}, wantKnown: true},
		// A single plugin's .conf is a list of one, as libcni makes it.
		{file: "10-bridge.conf", body: `{"cniVersion":"0.4.0","name":"mynet","type":"bridge","bridge":"cni0"}`,
			wantName: "mynet", wantType: "bridge", wantPlugins: []string{"bridge"}, wantKnown: true},
		{file: "10-odd.conflist", body: `{"name":"odd","plugins":[{"type":"odd-cni"}]}`,
			wantName: "odd", wantType: "odd-cni", wantPlugins: []string{"odd-cni"}},
		// libcni skips a .conf without a type and a list without plugins.
		{file: "00-notype.conf", body: `{"name":"x"}`, wantNil: true},
		{file: "00-empty.conflist", body: `{"name":"x","plugins":[]}`, wantNil: true},
		{file: "00-broken.conflist", body: `{"name":`, isErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			n, err := parseCNIConf(tt.file, []byte(tt.body))
			switch {
			case tt.isErr:
				if err == nil {
					t.Errorf("parseCNIConf(%q) = %+v, want an error", tt.file, n)
				}
				return
			case err != nil:
				t.Fatalf("parseCNIConf(%q): %v", tt.file, err)
			case tt.wantNil:
				if n != nil {
					t.Errorf("parseCNIConf(%q) = %+v, want nil", tt.file, n)
				}
				return
			case n == nil:
				t.Fatalf("parseCNIConf(%q) = nil", tt.file)
			}
			if n.Name != tt.wantName || n.Type != tt.wantType || n.Known != tt.wantKnown ||
				!slices.Equal(n.Agents, tt.wantAgents) || !slices.Equal(n.Plugins, tt.wantPlugins) {
				t.Errorf("parseCNIConf(%q) = %+v, want name %s type %s known %v agents %v plugins %v",
					tt.file, n, tt.wantName, tt.wantType, tt.wantKnown, tt.wantAgents, tt.wantPlugins)
			}
		})
	}
}

func writeCNIFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCNINetworkFirstByName: the node's CNI is the first usable
// configuration by file name, read under the rootfs; a new file that
// sorts first takes over.
func TestCNINetworkFirstByName(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "etc/cni/net.d")
	writeCNIFile(t, filepath.Join(dir, "00-notype.conf"), `{"name":"skipped"}`)
	writeCNIFile(t, filepath.Join(dir, "05-readme.txt"), `not a configuration`)
	writeCNIFile(t, filepath.Join(dir, "10-calico.conflist"), `{"name":"k8s-pod-network","plugins":[{"type":"calico"}]}`)
	writeCNIFile(t, filepath.Join(dir, "99-bridge.conf"), `{"name":"mynet","type":"bridge"}`)
	c := New("/etc/cni/net.d", "")
	n, err := c.network(root)
	if err != nil || n == nil || n.Type != "calico" || n.File != "/etc/cni/net.d/10-calico.conflist" {
		t.Fatalf("network = %+v, %v; want calico from /etc/cni/net.d/10-calico.conflist", n, err)
	}
	writeCNIFile(t, filepath.Join(dir, "01-cilium.conflist"), `{"name":"cilium","plugins":[{"type":"cilium-cni"}]}`)
	if n, err = c.network(root); err != nil || n == nil || n.Type != "cilium" {
		t.Errorf("after 01-cilium.conflist: network = %+v, %v; want cilium", n, err)
	}
	if n, err := New("/etc/cni/none", "").network(root); n != nil || err != nil {
		t.Errorf("missing directory: network = %+v, %v; want none and no error", n, err)
	}
}

// fakeProc writes a procfs with one process of that command name.
func fakeProc(t *testing.T, procfs string, pid, comm string, start int) {
	t.Helper()
	writeCNIFile(t, filepath.Join(procfs, pid, "comm"), comm+"\n")
	fields := make([]string, 50)
	for i := range fields {
		fields[i] = "0"
	}
	fields[19] = strings.Repeat("1", start) // field 22 of stat is the 20th after ")"
	writeCNIFile(t, filepath.Join(procfs, pid, "stat"), pid+" ("+comm+") S "+strings.Join(fields[1:], " ")+"\n")
}

func TestCNIAgentRunning(t *testing.T) {
	procfs := t.TempDir()
	fakeProc(t, procfs, "1", "init", 1)
	fakeProc(t, procfs, "77", "bash", 2)
	c := New("", "")
	agents := []string{"calico-node", "bird"}
	if pid, ok := c.agentRunning(procfs, agents); ok {
		t.Fatalf("agentRunning = %d, true; want no agent", pid)
	}
	fakeProc(t, procfs, "42", "calico-node", 3)
	if pid, ok := c.agentRunning(procfs, agents); !ok || pid != 42 {
		t.Fatalf("agentRunning = %d, %v; want 42, true", pid, ok)
	}
	// The PID found last is checked first; a restarted agent is found again.
	os.RemoveAll(filepath.Join(procfs, "42"))
	fakeProc(t, procfs, "43", "bird", 4)
	if pid, ok := c.agentRunning(procfs, agents); !ok || pid != 43 {
		t.Fatalf("after a restart: agentRunning = %d, %v; want 43, true", pid, ok)
	}
	// A reused PID with another start time is not the agent.
	fakeProc(t, procfs, "43", "bash", 5)
	if pid, ok := c.agentRunning(procfs, agents); ok {
		t.Errorf("after the agent exited: agentRunning = %d, true; want false", pid)
	}
}

// A libcni cache entry as containerd 1.6 writes it: no top-level netns,
// the namespace is the sandbox of the pod's eth0.
const containerdCacheEntry = `{"kind":"cniCacheV1","containerId":"@SANDBOX@","config":"eyJjbmlWZXJzaW9uIjoiMC40LjAifQ==","ifName":"eth0","networkName":"podnet",` +
	`"cniArgs":[["IgnoreUnknown","1"],["K8S_POD_NAMESPACE","@NAMESPACE@"],["K8S_POD_NAME","@NAME@"],["K8S_POD_INFRA_CONTAINER_ID","@SANDBOX@"],["K8S_POD_UID","@UID@"]],` +
	`"capabilityArgs":{"dns":{"Servers":null,"Searches":null,"Options":null},"io.kubernetes.cri.pod-annotations":{}},` +
	`"result":{"cniVersion":"0.4.0","interfaces":[{"name":"cni0","mac":"7e:62:ee:3a:0b:01"},{"name":"@HOSTVETH@","mac":"@HOSTMAC@"},` +
	`{"name":"eth0","mac":"@PODMAC@","sandbox":"@NETNS@"}],"ips":[{"version":"4","interface":2,"address":"10.88.0.5/16","gateway":"10.88.0.1"}],` +
	`"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}}`

// cacheEntry fills in containerdCacheEntry.
func cacheEntry(sandbox, namespace, name, uid, hostVeth, hostMAC, podMAC, netns string) string {
	return strings.NewReplacer("@SANDBOX@", sandbox, "@NAMESPACE@", namespace, "@NAME@", name, "@UID@", uid,
		"@HOSTVETH@", hostVeth, "@HOSTMAC@", hostMAC, "@PODMAC@", podMAC, "@NETNS@", netns).Replace(containerdCacheEntry)
}

func TestParseCNICacheEntry(t *testing.T) {
	t.Run("containerd 1.6", func(t *testing.T) {
		e, err := parseCNICacheEntry("podnet-abc-eth0", []byte(cacheEntry("abc", "default", "web", "u-1", "veth1234", "aa:bb:cc:dd:ee:01", "aa:bb:cc:dd:ee:02", "/var/run/netns/cni-1")))
		if err != nil {
			t.Fatal(err)
		}
		if e.netns != "/var/run/netns/cni-1" || e.ifName != "eth0" || e.network != "podnet" || e.container == nil || e.container.Mac != "aa:bb:cc:dd:ee:02" {
			t.Errorf("entry = %+v, want the netns from eth0's sandbox", e)
		}
		if h := e.hostInterface("veth1234"); h == nil || h.Mac != "aa:bb:cc:dd:ee:01" {
			t.Errorf("host interface veth1234 = %+v", h)
		}
		want := inventory.Owner{Kind: inventory.OwnerPod, ID: "abc", Name: "web", PodNamespace: "default", PodName: "web", PodUID: "u-1"}
		if o := e.owner(); *o != want {
			t.Errorf("owner = %+v, want %+v", o, want)
		}
	})
	t.Run("cnitool with a netns and no Kubernetes arguments", func(t *testing.T) {
		e, err := parseCNICacheEntry("calinet-c1-eth0", []byte(`{"kind":"cniCacheV1","containerId":"c1","ifName":"eth0","networkName":"calinet","netns":"/run/netns/x",`+
			`"result":{"cniVersion":"1.0.0","interfaces":[{"name":"cali0123456789a"}]}}`))
		if err != nil {
			t.Fatal(err)
		}
		if e.netns != "/run/netns/x" || e.container != nil || e.hostInterface("cali0123456789a") == nil {
			t.Errorf("entry = %+v", e)
		}
		if o := e.owner(); o.Kind != inventory.OwnerContainer || o.ID != "c1" {
			t.Errorf("owner = %+v, want container c1", o)
		}
	})
	for _, bad := range []string{`{"containerId":`, `{"ifName":"eth0"}`} {
		if e, err := parseCNICacheEntry("bad", []byte(bad)); err == nil {
			t.Errorf("parseCNICacheEntry(%q) = %+v, want an error", bad, e)
		}
	}
}

// TestCNICacheReread: the directory is listed again only when it
// changed, and only changed files are parsed again; a half-written entry
// is read again at the next snapshot.
func TestCNICacheReread(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "var/lib/cni/results")
	a := filepath.Join(dir, "podnet-a-eth0")
	writeCNIFile(t, a, cacheEntry("a", "default", "web", "u-1", "veth1", "", "", "/run/netns/cni-a"))
	old := time.Now().Add(-time.Hour)
	settle := func() {
		t.Helper()
		for _, p := range []string{a, dir} {
			if err := os.Chtimes(p, old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	settle()
	c := New("", "/var/lib/cni/results")
	first, exists, err := c.entries(root)
	if err != nil || !exists || len(first) != 1 {
		t.Fatalf("entries = %v, %v, %v; want one", first, exists, err)
	}
	// Changed behind the directory's back (same mtime, not listed again).
	writeCNIFile(t, a, cacheEntry("a", "default", "changed", "u-1", "veth1", "", "", "/run/netns/cni-a"))
	settle()
	if again, _, _ := c.entries(root); len(again) != 1 || again[0] != first[0] {
		t.Errorf("unchanged directory: entries %v, want the cached %v", again, first)
	}
	// A new entry, half written: the directory changed.
	b := filepath.Join(dir, "podnet-b-eth0")
	writeCNIFile(t, b, `{"kind":"cniCac`)
	// Listed again: the changed entry is parsed again, the half-written
	// one is not taken.
	got, _, err := c.entries(root)
	if err != nil || len(got) != 1 || got[0].args["K8S_POD_NAME"] != "changed" {
		t.Errorf("with a half-written entry: entries %v, %v; want podnet-a-eth0 as changed only", got, err)
	}
	writeCNIFile(t, b, cacheEntry("b", "default", "db", "u-2", "veth2", "", "", "/run/netns/cni-b"))
	for _, p := range []string{b, dir} {
		os.Chtimes(p, old, old) // the directory's mtime as when it was listed
	}
	got, _, _ = c.entries(root)
	if len(got) != 2 {
		t.Errorf("after the entry was written: %d entries, want 2", len(got))
	}
	if _, exists, err := New("", "/var/lib/cni/none").entries(root); exists || err != nil {
		t.Errorf("missing directory: exists %v, %v; want false, nil", exists, err)
	}
}

func TestCNIFamilies(t *testing.T) {
	tests := []struct {
		network *Network
		want    string
	}{
		{&Network{Name: "k8s-pod-network", Type: "calico", Known: true, Agents: []string{"calico-node"}, DaemonRunning: true}, "true"},
		{&Network{Name: "k8s-pod-network", Type: "calico", Known: true, Agents: []string{"calico-node"}}, "false"},
		{&Network{Name: "podnet", Type: "bridge", Known: true}, "n/a"},
		{&Network{Name: "odd", Type: "odd-cni"}, ""},
	}
	for _, tt := range tests {
		v := &View{Network: tt.network, CacheRead: true, Stale: []Attachment{{File: "podnet-a-eth0"}}}
		fs := v.Families(nil)
		if len(fs) != 2 || fs[0].Name != "veth_cni_info" || fs[1].Name != "veth_cni_stale_attachments" || fs[1].Series[0].Value != 1 {
			t.Fatalf("Families = %+v", fs)
		}
		labels := fs[0].Series[0].Labels
		if labels[0] != (inventory.Label{Name: "daemon_running", Value: tt.want}) || labels[1] != (inventory.Label{Name: "name", Value: tt.network.Name}) || labels[2] != (inventory.Label{Name: "type", Value: tt.network.Type}) {
			t.Errorf("veth_cni_info of %s = %v, want daemon_running=%q", tt.network.Type, labels, tt.want)
		}
		if _, down := v.AgentDown(); down != (tt.want == "false") {
			t.Errorf("AgentDown of %+v = %v", tt.network, down)
		}
	}
	if fs := (&View{}).Families(nil); len(fs) != 0 {
		t.Errorf("no CNI, no cache: Families = %+v, want none", fs)
	}
}
