package web

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/inventory"
)

// Snapshotter takes a fresh inventory: [*inventory.Inventory], or a fake in
// tests.
type Snapshotter interface {
	Snapshot(ctx context.Context) (*inventory.Snapshot, error)
}

// WriteInventoryJSON writes the snapshot as the inventory document: the
// body of GET /api/v1/veths and the output of `inspect --output=json`, one
// encoder for both so they never drift apart. A node without veths has
// "veths": [], not null, so that readers can iterate without a check.
// leaked_netns keeps its null: it means "not proved" (a partial view),
// which [] would hide.
func WriteInventoryJSON(w io.Writer, snap *inventory.Snapshot) error {
	doc := *snap
	if doc.Veths == nil {
		doc.Veths = []inventory.Veth{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(&doc)
}

// The functions below describe a veth the way both the inspect table and
// the /veths page show it.

// DeviceText is how a text table shows a device name: as it is, or
// quoted in Go syntax when it holds a space, a character that is not
// printable (a Unicode space such as U+2003, which the kernel accepts in
// a name) or bytes that are not UTF-8, any of which a reader could take
// for a column separator or not see at all.
func DeviceText(name string) string {
	if !utf8.ValidString(name) || strings.IndexFunc(name, func(r rune) bool { return r == ' ' || !unicode.IsPrint(r) }) >= 0 {
		return strconv.Quote(name)
	}
	return name
}

// Dash is s, or "-" when it is empty.
func Dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// PeerNetns says where the veth's peer is: its namespace's inode, the host
// (with the peer's name), or that it was not found.
func PeerNetns(v *inventory.Veth) string {
	switch {
	case v.PeerOnHost:
		return "host (" + Dash(v.PeerName) + ")"
	case v.PeerNetNSID < 0:
		return "not found"
	case v.PeerNetns == nil:
		return fmt.Sprintf("nsid %d (not found)", v.PeerNetNSID)
	default:
		return fmt.Sprintf("net:[%d]", v.PeerNetns.Inode)
	}
}

// Procs is the number of processes in the peer namespace, "-" when it is
// not known.
func Procs(v *inventory.Veth) string {
	if v.PeerNetns == nil || v.PeerNetns.Uncounted {
		return "-"
	}
	return strconv.Itoa(len(v.PeerNetns.PIDs))
}

// HeldBy is what keeps the peer namespace alive: its mounts and its first
// process (with how many more).
func HeldBy(v *inventory.Veth) string {
	n := v.PeerNetns
	if n == nil {
		return "-"
	}
	held := append([]string{}, n.Mounts...)
	if len(n.PIDs) > 0 {
		p := "pid " + strconv.Itoa(n.PIDs[0])
		if len(n.PIDs) > 1 {
			p += fmt.Sprintf(" +%d", len(n.PIDs)-1)
		}
		held = append(held, p)
	}
	if n.Uncounted {
		held = append(held, "a running container")
	}
	if len(held) == 0 {
		return "-"
	}
	return strings.Join(held, ",")
}

// OwnerText is the veth's owner, or its last owner ("was …"), or "-".
func OwnerText(v *inventory.Veth) string {
	was := ""
	if v.LastOwner != nil {
		was = LastOwnerText(v.LastOwner, v.LastOwnerSeen)
	}
	if o := v.Owner; o != nil {
		// An orphan still held by a process (owner_exited: a stray in a
		// dead container's namespace) names both: the process to look
		// at, and the container or pod it came from.
		if was != "" && v.Verdict != inventory.Owned {
			return DescribeOwner(o) + "; " + was
		}
		return DescribeOwner(o)
	}
	return Dash(was)
}

// LastOwnerText names a last owner, and when it was seen: "was pod
// default/web, seen 2026-12-05 16:00:00"; "-" for none.
func LastOwnerText(o *inventory.Owner, seen time.Time) string {
	switch {
	case o == nil:
		return "-"
	case seen.IsZero():
		return "was " + DescribeOwner(o)
	}
	return "was " + DescribeOwner(o) + ", seen " + seen.UTC().Format(time.DateTime)
}

// ShortID is a container or sandbox ID as docker ps shows it: its first
// 12 characters.
func ShortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// DescribeOwner names an owner the way an operator looks it up: a pod by
// namespace/name (or UID), a container by short ID and name, a process by
// PID and command.
func DescribeOwner(o *inventory.Owner) string {
	switch o.Kind {
	case inventory.OwnerPod:
		if o.PodName != "" {
			return "pod " + o.PodNamespace + "/" + o.PodName
		}
		return "pod " + o.PodUID
	case inventory.OwnerContainer:
		id := ShortID(o.ID)
		if o.Name != "" {
			return "container " + id + " (" + o.Name + ")"
		}
		return "container " + id
	default:
		return "process " + o.ID + " (" + o.Name + ")"
	}
}

// Age is how long the exporter has known the veth. A veth missing from the
// state file falls back to sysfs, marked so: kernfs only stamps an inode
// when it is first looked at, so that is a lower bound, not a creation time.
func Age(v *inventory.Veth, now time.Time, sysfs string) string {
	if !v.FirstSeen.IsZero() && v.FirstSeen.Before(now) {
		return ShortDuration(now.Sub(v.FirstSeen))
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(sysfs, "class/net", v.Name), &st); err == nil {
		return ">=" + ShortDuration(now.Sub(time.Unix(st.Ctim.Unix()))) + " (sysfs)"
	}
	return "new"
}

// ShortDuration rounds d down to what a table needs: 42s, 5m, 3h7m, 12d.
func ShortDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s"
	case d < time.Hour:
		return strconv.Itoa(int(d.Minutes())) + "m"
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return strconv.Itoa(int(d.Hours()/24)) + "d"
	}
}
