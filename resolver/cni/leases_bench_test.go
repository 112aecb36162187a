package cni

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
)

// BenchmarkLeases is what the leases cost a scrape on a node with 250 of
// them (a /24 nearly full): "unchanged" is every scrape but those after a
// pod came or went (one stat of the directory and of each configuration),
// "changed" those (every lease file read again), the baseline.
func BenchmarkLeases(b *testing.B) {
	data, conf := b.TempDir(), b.TempDir()
	confFile := filepath.Join(conf, "10-podnet.conflist")
	if err := os.WriteFile(confFile, []byte(conflist("podnet", data, `[[{"subnet":"10.78.0.0/24"}]]`)), 0o644); err != nil {
		b.Fatal(err)
	}
	dir := filepath.Join(data, "podnet")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	for i := 2; i < 252; i++ {
		id := fmt.Sprintf("%064x", i)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("10.78.0.%d", i)), []byte(id+"\r\neth0"), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	old := time.Now().Add(-time.Minute)
	for _, p := range []string{dir, conf, confFile} {
		if err := os.Chtimes(p, old, old); err != nil {
			b.Fatal(err)
		}
	}
	p := inventory.Paths{Procfs: "/proc", Sysfs: "/sys", Rootfs: "/"}
	for _, bc := range []struct {
		name    string
		changed bool
	}{{"unchanged", false}, {"changed", true}} {
		b.Run(fmt.Sprintf("leases=250/%s", bc.name), func(b *testing.B) {
			c := New(conf, "")
			if _, err := c.Annotate(p); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if bc.changed {
					c.leases = nil
				}
				a, err := c.Annotate(p)
				if err != nil {
					b.Fatal(err)
				}
				if n := a.View().(*View).IPAM[0]; len(n.Leases) != 250 {
					b.Fatalf("%d leases, want 250", len(n.Leases))
				}
			}
		})
	}
}
