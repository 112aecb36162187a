package main

import (
	"regexp"
	"runtime/debug"
	"strings"

	"github.com/prometheus/common/version"

	vethexporter "github.com/veth-exporter/veth_exporter"
)

// releaseVersion matches a module version that names a release, as `go
// install …@v0.1.0` records it: not a pseudo-version of a commit
// (v0.0.0-20261205120000-0123456789ab), not a modified tree (+dirty).
var releaseVersion = regexp.MustCompile(`^v\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?$`)
var pseudoVersion = regexp.MustCompile(`\d{14}-[0-9a-f]{12}$`)

// fillVersion gives a build the linker did not stamp (`go build`, `go
// run`, `go install`) its version: the module version Go recorded when it
// names a release, else the VERSION file's. Its revision is the commit Go
// recorded from the work tree (prometheus/common/version reads it), or
// unknown where Go records none (`go run`, a build outside a git tree).
func fillVersion() {
	if version.Version != "" {
		return
	}
	version.Version = vethexporter.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; releaseVersion.MatchString(v) && !pseudoVersion.MatchString(v) {
			version.Version = strings.TrimPrefix(v, "v")
		}
	}
}
