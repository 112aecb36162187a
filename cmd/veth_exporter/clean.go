package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/remediate"
	"github.com/veth-exporter/veth_exporter/web"
)

// cleanCommand is `veth_exporter clean`.
type cleanCommand struct {
	cmd       *kingpin.CmdClause
	inv       *inventoryFlags
	gates     gateFlags
	dryRun    bool
	all       bool
	leaked    bool
	minAge    time.Duration
	minAgeSet bool
	devices   []string
}

func newCleanCommand(app *kingpin.Application, inv *inventoryFlags) *cleanCommand {
	c := &cleanCommand{inv: inv}
	c.cmd = app.Command("clean", "Remove leftover veths, through the same safety gates as the webhook (minus the alert's): "+
		"each must still be orphaned, for an allowed reason, for --remediation.min-age as the state file of a running exporter records it "+
		"(a state file no exporter refreshed within --state.max-gap is refused: stale_state). Several veths go in one kernel transaction. "+
		"Exit 0 when everything asked for is deleted or gone, 1 when anything was refused, failed or not found, 2 on usage errors.")
	c.cmd.Flag("dry-run", "Say what would be deleted; delete nothing.").BoolVar(&c.dryRun)
	c.cmd.Flag("all-orphans", "Every orphan with an allowed reason (--remediation.reasons), instead of the DEVICEs named.").BoolVar(&c.all)
	c.cmd.Flag("leaked-netns", "Also release every leaked namespace (held only by a mount: no process, no veth) the exporter's state file "+
		"has recorded leaked for --remediation.min-age, its mounts unmounted in the host's mount namespace (only under "+
		strings.Join(netnsDirs(), ", ")+"): the kernel frees it if and only if nothing else holds it.").BoolVar(&c.leaked)
	c.cmd.Flag("min-age", "Short for --remediation.min-age.").IsSetByUser(&c.minAgeSet).DurationVar(&c.minAge)
	c.gates.registerFor(c.cmd, false)
	c.cmd.Arg("device", "Veths to remove.").StringsVar(&c.devices)
	return c
}

func (c *cleanCommand) run(logger *slog.Logger) int {
	if (c.all && len(c.devices) > 0) || (!c.all && len(c.devices) == 0 && !c.leaked) {
		fmt.Fprintf(os.Stderr, "%s clean: name the DEVICEs to remove, or --all-orphans (not both), and/or --leaked-netns\n", name)
		return 2
	}
	mode := remediate.ModeEnforce
	if c.dryRun {
		mode = remediate.ModeDryRun
	}
	if c.minAgeSet {
		c.gates.minAge = c.minAge
	}
	cfg, err := c.gates.config(mode, c.inv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s clean: %v\n", name, err)
		return 2
	}
	// The table is the answer; the log repeats it only at debug.
	cfg.AnswerLogLevel = slog.LevelDebug
	// A serving exporter with the same audit file counts these answers.
	cfg.AuditBy = remediate.AuditByClean
	// The state file is the exporter's: clean reads its orphaned-since
	// times and writes nothing.
	inv, _, err := c.inv.open(true, 0, logger)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s clean: %v\n", name, err)
		return 2
	}
	var devices []remediate.Device
	if c.all {
		snap, err := inv.Snapshot(context.Background())
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s clean: %v\n", name, err)
			return 1
		}
		for i := range snap.Veths {
			if v := &snap.Veths[i]; v.Verdict == inventory.Orphaned && slices.Contains(cfg.Reasons, v.Reason) {
				devices = append(devices, remediate.Device{Name: v.Name, Index: v.Index})
			}
		}
		if cfg.MaxPerRequest < len(devices) {
			fmt.Fprintf(os.Stderr, "%s clean: %d orphans, --remediation.max-per-request is %d: the rest are refused\n", name, len(devices), cfg.MaxPerRequest)
		}
	} else {
		for _, d := range c.devices {
			devices = append(devices, remediate.Device{Name: d})
		}
	}
	start := time.Now()
	answers, err := c.handle(remediate.New(cfg, inv, nil, logger), devices)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s clean: %v\n", name, err)
		return 1
	}
	writeAnswers(os.Stdout, answers)
	counts := map[remediate.Result]int{}
	for _, a := range answers {
		counts[a.Result]++
	}
	var summary []string
	for _, r := range remediate.Results {
		if counts[r] > 0 {
			summary = append(summary, fmt.Sprintf("%d %s", counts[r], r))
		}
	}
	fmt.Fprintf(os.Stderr, "%s clean: %d veths: %s in %s\n", name, len(answers), strings.Join(summary, ", "), time.Since(start).Round(time.Millisecond))
	for _, a := range answers {
		switch a.Result {
		case remediate.ResultDeleted, remediate.ResultGone, remediate.ResultWouldDelete:
		default:
			return 1
		}
	}
	return 0
}

func writeAnswers(w io.Writer, answers []remediate.Answer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tIFINDEX\tRESULT\tREASON\tDETAIL")
	for _, a := range answers {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", web.DeviceText(a.Device), a.Ifindex, a.Result, dash(a.Reason), dash(a.Detail))
	}
	tw.Flush()
}

// handle removes the devices and, with --leaked-netns, the leaked
// namespaces, and returns the answers of both.
func (c *cleanCommand) handle(r *remediate.Remediator, devices []remediate.Device) ([]remediate.Answer, error) {
	var answers []remediate.Answer
	if len(devices) > 0 || !c.leaked {
		var err error
		if answers, err = r.HandleDevices(context.Background(), devices); err != nil {
			return nil, err
		}
	}
	if c.leaked {
		leaked, err := r.HandleLeaked(context.Background())
		if err != nil {
			return nil, fmt.Errorf("leaked namespaces: %w", err)
		}
		answers = append(answers, leaked...)
	}
	return answers, nil
}
