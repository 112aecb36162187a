// Package vethexporter holds what the whole repository shares at build
// time: the release version, from the VERSION file at its root, which
// `make build` stamps too and a plain `go build` or `go run` reads here.
package vethexporter

import (
	_ "embed"
	"strings"
)

//go:embed VERSION
var version string

// Version is the release version the source tree is, such as 0.1.0.
func Version() string {
	return strings.TrimSpace(version)
}
