package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
	"github.com/veth-exporter/veth_exporter/kernel"
)

// TestCleanLeakedNetns: `clean --leaked-netns` releases the leaked
// namespaces a running exporter recorded, through the same release as
// leftovers: a plain one is freed (its mount and mount point gone); one
// that holds another interface, one also pinned outside the netns
// directories and one a descriptor holds are left as they are, each
// saying why; one the exporter never recorded is not touched.
func TestCleanLeakedNetns(t *testing.T) {
	netnstest.Require(t)
	remediationFixture(t, "vllive")
	for _, ns := range []string{"lkplain", "lkroutes", "lkpinned", "lkheld"} {
		netnstest.NamedNetns(t, ns)
	}
	netnstest.IP(t, "-n", "lkroutes", "link", "add", "rt0", "type", "veth", "peer", "name", "rt1")
	elsewhere := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(elsewhere, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("/run/netns/lkpinned", elsewhere, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(elsewhere, unix.MNT_DETACH) })
	// Pinned where Docker pins its namespaces, and Docker's resolver is
	// off (no socket in the fixture): Docker's to decide.
	netnstest.NamedNetns(t, "lkdocker")
	if err := os.MkdirAll("/run/docker/netns", 0o755); err != nil {
		t.Fatal(err)
	}
	dockerPin := "/run/docker/netns/0123456789ab"
	if err := os.WriteFile(dockerPin, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("/run/netns/lkdocker", dockerPin, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dockerPin, unix.MNT_DETACH) })
	netnstest.IP(t, "netns", "del", "lkdocker")
	held, err := os.Open("/run/netns/lkheld")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	statePath := filepath.Join(t.TempDir(), "state.json")
	recordOrphans(t, statePath)
	netnstest.NamedNetns(t, "lklate") // after the record
	state := "--state.path=" + statePath

	if out, code := clean(t, state, "--leaked-netns"); code != 1 || !strings.Contains(out, "orphan_too_young") {
		t.Errorf("clean --leaked-netns with the default min-age: exit %d\n%s\nwant 1 and orphan_too_young", code, out)
	}
	if out, _ := clean(t, state, "--leaked-netns", "--min-age=0s", "--dry-run"); !strings.Contains(strings.Join(row(out, "/run/netns/lkplain"), " "), "would_delete") ||
		kernel.NsfsInode("/run/netns/lkplain") == 0 {
		t.Errorf("clean --leaked-netns --dry-run:\n%s\nwant would_delete for /run/netns/lkplain, and the namespace kept", out)
	}
	out, code := clean(t, state, "--leaked-netns", "--min-age=0s")
	want := map[string][]string{
		"/run/netns/lkplain":  {"deleted", "leaked_netns", "released /run/netns/lkplain"},
		"/run/netns/lkroutes": {"refused", "changed", "rt0"},
		"/run/netns/lkpinned": {"refused", "not_releasable", elsewhere},
		"/run/netns/lkheld":   {"refused", "still_held", "of process"},
		"/run/netns/lklate":   {"refused", "not_recorded"},
		dockerPin:             {"refused", "incomplete_view", "docker"},
	}
	for dev, words := range want {
		r := strings.Join(row(out, dev), " ")
		for _, w := range words {
			if !strings.Contains(r, w) {
				t.Errorf("clean --leaked-netns: row of %s is %q, want %q in it\n%s", dev, r, w, out)
			}
		}
	}
	if code != 1 {
		t.Errorf("clean --leaked-netns: exit %d, want 1 (some refused)", code)
	}
	if _, err := os.Stat("/run/netns/lkplain"); err == nil {
		t.Error("/run/netns/lkplain is still there")
	}
	for _, kept := range []string{"/run/netns/lkroutes", "/run/netns/lkpinned", "/run/netns/lklate", dockerPin} {
		if kernel.NsfsInode(kept) == 0 {
			t.Errorf("%s was released", kept)
		}
	}
}
