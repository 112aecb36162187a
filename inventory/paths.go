package inventory

import (
	"path/filepath"
	"strings"
)

// Paths says where the host's filesystems are mounted, so the exporter can
// run in a container with the host's /proc, /sys and / mounted elsewhere
// (as node_exporter's --path.* flags).
type Paths struct {
	Procfs string
	Sysfs  string
	Rootfs string
}

// DefaultPaths are the paths of an exporter running directly on the host.
var DefaultPaths = Paths{Procfs: "/proc", Sysfs: "/sys", Rootfs: "/"}

// hostPath turns a path as this process sees it into the path the host
// sees, by removing the rootfs prefix: an operator reading "held by
// /run/netns/x" must find it on the host, not in the exporter's container.
func (p Paths) hostPath(path string) string {
	root := filepath.Clean(p.Rootfs)
	if root == "/" || root == "." || root == "" {
		return path
	}
	if rel, ok := strings.CutPrefix(path, root); ok && (rel == "" || rel[0] == '/') {
		if rel == "" {
			return "/"
		}
		return rel
	}
	return path
}

// HostRunPath writes /var/run paths as /run paths, as mountinfo shows them
// on every distribution where /var/run links to /run.
func HostRunPath(p string) string {
	if rest, ok := strings.CutPrefix(p, "/var/run/"); ok {
		return "/run/" + rest
	}
	return p
}
