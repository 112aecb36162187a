package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/alecthomas/kingpin/v2"

	"github.com/veth-exporter/veth_exporter/inventory"
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
	if len(snap.LeakedNetns) > 0 {
		fmt.Fprintf(w, "\nLEAKED NETNS (held only by a mount: no process, no veth)\n")
		for _, n := range snap.LeakedNetns {
			fmt.Fprintf(w, "net:[%d]  %s  %s\n", n.Inode, strings.Join(n.Mounts, ","), web.LastOwnerText(n.LastOwner, n.LastOwnerSeen))
		}
	}
}

// dash is [web.Dash], for the tables of this package.
func dash(s string) string { return web.Dash(s) }
