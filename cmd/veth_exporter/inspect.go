package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/resolver/cni"
	"github.com/veth-exporter/veth_exporter/web"
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
		if err := web.WriteInventoryJSON(os.Stdout, snap); err != nil {
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
			web.DeviceText(v.Name), web.Dash(v.Master), v.OperState, web.PeerNetns(v), web.Procs(v), web.HeldBy(v), web.OwnerText(v),
			v.Verdict, v.Reason, web.Age(v, snap.Taken, sysfs))
	}
	tw.Flush()
	if snap.LeakedNetns == nil {
		// nil, not empty: the view is partial, and a namespace whose
		// processes could not all be seen is not proved to hold none.
		fmt.Fprintf(w, "\nLEAKED NETNS not counted: the view is partial (see the warnings), so no namespace is proved to hold no process\n")
	}
	if len(snap.LeakedNetns) > 0 {
		fmt.Fprintf(w, "\nLEAKED NETNS (held only by a mount: no process, no veth)\n")
		for _, n := range snap.LeakedNetns {
			fmt.Fprintf(w, "net:[%d]  %s  %s\n", n.Inode, strings.Join(n.Mounts, ","), web.LastOwnerText(n.LastOwner, n.LastOwnerSeen))
		}
	}
	if v, ok := snap.View(cni.Name).(*cni.View); ok {
		writeLeases(w, v.IPAM, snap.Taken)
	}
}

// writeLeases prints each host-local range's use, then the leaked leases.
func writeLeases(w io.Writer, networks []*cni.IPAMNetwork, now time.Time) {
	if len(networks) == 0 {
		return
	}
	fmt.Fprintf(w, "\nADDRESSES (host-local)\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NETWORK\tRANGE\tSIZE\tLIVE\tLEAKED\tUNKNOWN\tFREE")
	var leaked []string
	for _, n := range networks {
		for _, r := range n.Ranges {
			fmt.Fprintf(tw, "%s\t%s\t%v\t%d\t%d\t%d\t%v\n", n.Name, r.Subnet, r.Size, r.Live, r.Leaked, r.Unknown,
				r.Size-float64(r.Live+r.Leaked+r.Unknown))
		}
		if n.Error != "" {
			fmt.Fprintf(tw, "%s\t(leases not read: %s)\n", n.Name, n.Error)
		}
		for _, l := range n.Leases {
			if l.State != cni.LeaseLeaked {
				continue
			}
			pod := "-"
			if l.PodName != "" {
				pod = l.PodNamespace + "/" + l.PodName
			}
			leaked = append(leaked, fmt.Sprintf("%s  %s  %s  pod %s  leaked for %s", n.Name, l.IP, web.ShortID(l.ContainerID), pod,
				now.Sub(l.LeakedSince).Truncate(time.Second)))
		}
	}
	tw.Flush()
	if len(leaked) > 0 {
		fmt.Fprintf(w, "\nLEAKED LEASES (no runtime lists the sandbox, no namespace is left: a CNI DEL that never ran)\n%s\n", strings.Join(leaked, "\n"))
	}
}

// dash is [web.Dash], for the tables of this package.
func dash(s string) string { return web.Dash(s) }
