package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"golang.org/x/sys/unix"

	"github.com/veth-exporter/veth_exporter/inventory"
)

type inspectCommand struct {
	cmd    *kingpin.CmdClause
	inv    *inventoryFlags
	output string
}

func newInspectCommand(app *kingpin.Application, inv *inventoryFlags) *inspectCommand {
	c := &inspectCommand{inv: inv}
	c.cmd = app.Command("inspect", "Print every veth of this node: master, peer namespace, what holds it, owner, verdict and age. "+
		"Reads the exporter's state file for history but never writes it.")
	c.cmd.Flag("output", "Output format: table or json.").Short('o').Default("table").EnumVar(&c.output, "table", "json")
	return c
}

func (c *inspectCommand) run(logger *slog.Logger) int {
	// inspect shows what it sees now: an orphan needs no settle time here,
	// and a one-shot run has none to give.
	inv, _, err := c.inv.open(true, 0, logger)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 2
	}
	snap, err := inv.Snapshot(context.Background())
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	for _, w := range snap.Warnings {
		fmt.Fprintf(os.Stderr, "warning: %s\n", w)
	}
	if c.output == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(snap); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
			return 1
		}
		return 0
	}
	writeTable(os.Stdout, snap, c.inv.paths.Sysfs)
	return 0
}

// writeTable prints the snapshot as the table an operator reads instead of
// running bridge link, readlink, nsenter loops and docker ps -a.
func writeTable(w io.Writer, snap *inventory.Snapshot, sysfs string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tMASTER\tSTATE\tPEER-NETNS\tPROCS\tHELD-BY\tOWNER\tVERDICT\tREASON\tAGE")
	for i := range snap.Veths {
		v := &snap.Veths[i]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			v.Name, dash(v.Master), v.OperState, peerNetns(v), procs(v), heldBy(v), owner(v),
			v.Verdict, v.Reason, age(v, snap.Taken, sysfs))
	}
	tw.Flush()
	if len(snap.LeakedNetns) > 0 {
		fmt.Fprintf(w, "\nLEAKED NETNS (held only by a mount: no process, no veth)\n")
		for _, n := range snap.LeakedNetns {
			fmt.Fprintf(w, "net:[%d]  %s\n", n.Inode, strings.Join(n.Mounts, ","))
		}
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func peerNetns(v *inventory.Veth) string {
	switch {
	case v.PeerOnHost:
		return "host (" + dash(v.PeerName) + ")"
	case v.PeerNetNSID < 0:
		return "not found"
	case v.PeerNetns == nil:
		return fmt.Sprintf("nsid %d (not found)", v.PeerNetNSID)
	default:
		return fmt.Sprintf("net:[%d]", v.PeerNetns.Inode)
	}
}

func procs(v *inventory.Veth) string {
	if v.PeerNetns == nil {
		return "-"
	}
	return strconv.Itoa(len(v.PeerNetns.PIDs))
}

func heldBy(v *inventory.Veth) string {
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
	if len(held) == 0 {
		return "-"
	}
	return strings.Join(held, ",")
}

func owner(v *inventory.Veth) string {
	if o := v.Owner; o != nil {
		return describeOwner(o)
	}
	if o := v.LastOwner; o != nil {
		if !v.LastOwnerSeen.IsZero() {
			return "was " + describeOwner(o) + ", seen " + v.LastOwnerSeen.UTC().Format(time.DateTime)
		}
		return "was " + describeOwner(o)
	}
	return "-"
}

// describeOwner names an owner the way an operator looks it up: a pod by
// namespace/name (or UID), a container by short ID and name, a process by
// PID and command.
func describeOwner(o *inventory.Owner) string {
	switch o.Kind {
	case inventory.OwnerPod:
		if o.PodName != "" {
			return "pod " + o.PodNamespace + "/" + o.PodName
		}
		return "pod " + o.PodUID
	case inventory.OwnerContainer:
		id := o.ID
		if len(id) > 12 {
			id = id[:12]
		}
		if o.Name != "" {
			return "container " + id + " (" + o.Name + ")"
		}
		return "container " + id
	default:
		return "process " + o.ID + " (" + o.Name + ")"
	}
}

// age is how long the exporter has known the veth. A veth missing from the
// state file falls back to sysfs, marked so: kernfs only stamps an inode
// when it is first looked at, so that is a lower bound, not a creation time.
func age(v *inventory.Veth, now time.Time, sysfs string) string {
	if !v.FirstSeen.IsZero() && v.FirstSeen.Before(now) {
		return shortDuration(now.Sub(v.FirstSeen))
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(sysfs, "class/net", v.Name), &st); err == nil {
		return ">=" + shortDuration(now.Sub(time.Unix(st.Ctim.Unix()))) + " (sysfs)"
	}
	return "new"
}

func shortDuration(d time.Duration) string {
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
