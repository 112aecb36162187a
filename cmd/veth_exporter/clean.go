package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/kernel"
	"github.com/veth-exporter/veth_exporter/remediate"
	"github.com/veth-exporter/veth_exporter/web"
)

// cleanCommand is `veth_exporter clean`.
type cleanCommand struct {
	cmd       *kingpin.CmdClause
	inv       *inventoryFlags
	gates     gateFlags
	settle    time.Duration
	dryRun    bool
	all       bool
	leaked    bool
	allLeases bool
	leases    []string
	minAge    time.Duration
	minAgeSet bool
	devices   []string
}

func newCleanCommand(app *kingpin.Application, inv *inventoryFlags) *cleanCommand {
	c := &cleanCommand{inv: inv}
	c.cmd = app.Command("clean", "Remove leftover veths, through the same safety gates as the webhook (minus the alert's): "+
		"each must still be orphaned, for an allowed reason, for --remediation.min-age as the state file of a running exporter records it "+
		"(a state file no exporter refreshed within --state.max-gap is refused: stale_state), and for --inventory.settle-time whatever the min-age. "+
		"Several veths go in one kernel transaction. "+
		"Exit 0 when everything asked for is deleted or gone, 1 when anything was refused, failed or not found, "+
		"or --all-orphans could not judge every veth (a partial view), 2 on usage errors.")
	c.cmd.Flag("dry-run", "Say what would be deleted; delete nothing.").BoolVar(&c.dryRun)
	c.cmd.Flag("all-orphans", "Every orphan with an allowed reason (--remediation.reasons), instead of the DEVICEs named; "+
		"what it skips, and why, goes to standard error.").BoolVar(&c.all)
	c.cmd.Flag("leaked-netns", "Also release every leaked namespace (held only by a mount: no process, no veth) the exporter's state file "+
		"has recorded leaked for --remediation.min-age, its mounts unmounted in the host's mount namespace (only under "+
		strings.Join(netnsDirs(), ", ")+"): the kernel frees it if and only if nothing else holds it.").BoolVar(&c.leaked)
	c.cmd.Flag("leases", "Also release every leaked address lease (host-local's, of a sandbox no runtime lists, with no namespace left) "+
		"the exporter's state file has recorded leaked for --remediation.min-age: the CNI DEL that never ran, from libcni's cache "+
		"entry (plugins from --cni.bin-dir), or, without one, the lease file removed as host-local does.").BoolVar(&c.allLeases)
	c.cmd.Flag("lease", "Release this leaked lease only: an address, or NETWORK/ADDRESS; repeatable.").StringsVar(&c.leases)
	c.cmd.Flag("min-age", "Short for --remediation.min-age (not both).").IsSetByUser(&c.minAgeSet).DurationVar(&c.minAge)
	settleTimeFlag(c.cmd, " clean calls nothing orphaned that the state file has recorded orphaned for less: give it the running exporter's value.", &c.settle)
	c.gates.registerFor(c.cmd, false)
	c.cmd.Arg("device", "Veths to remove.").StringsVar(&c.devices)
	return c
}

func (c *cleanCommand) run(logger *slog.Logger) int {
	if (c.all && len(c.devices) > 0) || (!c.all && len(c.devices) == 0 && !c.leaked && !c.wantsLeases()) {
		fmt.Fprintf(os.Stderr, "%s clean: name the DEVICEs to remove, or --all-orphans (not both), and/or --leaked-netns, --leases or --lease\n", name)
		return 2
	}
	if c.allLeases && len(c.leases) > 0 {
		fmt.Fprintf(os.Stderr, "%s clean: --leases is every leaked lease, --lease one: not both\n", name)
		return 2
	}
	for _, l := range c.leases {
		if !validLease(l) {
			fmt.Fprintf(os.Stderr, "%s clean: --lease %q: want an address, or NETWORK/ADDRESS\n", name, l)
			return 2
		}
	}
	mode := remediate.ModeEnforce
	if c.dryRun {
		mode = remediate.ModeDryRun
	}
	if c.minAgeSet {
		// One min-age: --min-age only spells it shorter.
		if c.gates.minAgeSet {
			fmt.Fprintf(os.Stderr, "%s clean: --min-age is short for --remediation.min-age: give one of them\n", name)
			return 2
		}
		if c.minAge < 0 {
			fmt.Fprintf(os.Stderr, "%s clean: --min-age: %v is negative\n", name, c.minAge)
			return 2
		}
		c.gates.minAge = c.minAge
	}
	// The state file is the exporter's: clean reads its orphaned-since
	// times and writes nothing. The settle time holds back what the
	// exporter still holds back.
	inv, _, err := c.inv.open(true, c.settle, logger)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s clean: %v\n", name, err)
		return 2
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
	snap, err := inv.Snapshot(context.Background())
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s clean: %v\n", name, err)
		return 1
	}
	partial := c.sayPartial(os.Stderr, snap)
	var devices []remediate.Device
	if c.all {
		devices = orphansToClean(os.Stderr, snap, cfg.Reasons, c.settle)
		if cfg.MaxPerRequest > 0 && cfg.MaxPerRequest < len(devices) {
			fmt.Fprintf(os.Stderr, "%s clean: %d orphans, --remediation.max-per-request is %d: the rest are refused\n", name, len(devices), cfg.MaxPerRequest)
		}
	} else {
		for _, d := range c.devices {
			devices = append(devices, remediate.Device{Name: d})
		}
	}
	code := c.clean(inv, cfg, devices, logger)
	if partial && c.all && code == 0 {
		fmt.Fprintf(os.Stderr, "%s clean: exit 1: the view is partial, veths it cannot judge were not removed\n", name)
		return 1
	}
	return code
}

// clean removes devices through the gates, prints the table and the
// summary, and returns the exit code.
func (c *cleanCommand) clean(inv remediate.Snapshotter, cfg remediate.Config, devices []remediate.Device, logger *slog.Logger) int {
	if len(devices) == 0 && !c.leaked && !c.wantsLeases() {
		fmt.Fprintf(os.Stderr, "%s clean: no orphan to remove\n", name)
		return 0
	}
	start := time.Now()
	answers, asked, err := c.handle(remediate.New(cfg, inv, nil, logger), devices)
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
	fmt.Fprintf(os.Stderr, "%s clean: %s: %s in %s\n", name, strings.Join(asked, ", "), strings.Join(summary, ", "), time.Since(start).Round(time.Millisecond))
	for _, a := range answers {
		switch a.Result {
		case remediate.ResultDeleted, remediate.ResultGone, remediate.ResultWouldDelete:
		default:
			return 1
		}
	}
	return 0
}

// sayPartial writes what the inventory could not see, and the flag or
// privilege that would let it, to w; it reports whether the view is
// partial. On a partial view nothing a hidden process might hold is
// called orphaned, so clean removes less than there is.
func (c *cleanCommand) sayPartial(w io.Writer, snap *inventory.Snapshot) bool {
	what := "warning"
	if snap.PartialView {
		what = "partial view"
	}
	for _, warning := range snap.Warnings {
		fmt.Fprintf(w, "%s clean: %s: %s\n", name, what, warning)
	}
	if !snap.PartialView {
		return false
	}
	if os.Geteuid() != 0 {
		fmt.Fprintf(w, "%s clean: run clean as root, as the exporter runs: it must read every process's network namespace (CAP_SYS_PTRACE) and the exporter's state file\n", name)
	}
	if !c.inv.trustPIDNS && !kernel.InitialPIDNamespace(c.inv.paths.Procfs) {
		fmt.Fprintf(w, "%s clean: if %s lists every process that can hold a namespace (a node that is itself a container, such as a kind node), "+
			"say so with --inventory.trust-pid-namespace\n", name, c.inv.paths.Procfs)
	}
	return true
}

// orphansToClean returns the orphans of snap whose reason is allowed, and
// writes to w what it skips that looks like a leftover, by group: orphans
// for a reason not allowed, veths still settling, and those whose
// evidence is incomplete.
func orphansToClean(w io.Writer, snap *inventory.Snapshot, allowed []inventory.Reason, settle time.Duration) []remediate.Device {
	var devices []remediate.Device
	notAllowed := map[inventory.Reason]int{}
	unknown := map[inventory.Reason]int{}
	for i := range snap.Veths {
		switch v := &snap.Veths[i]; {
		case v.Verdict == inventory.Orphaned && slices.Contains(allowed, v.Reason):
			devices = append(devices, remediate.Device{Name: v.Name, Index: v.Index})
		case v.Verdict == inventory.Orphaned:
			notAllowed[v.Reason]++
		case v.Verdict == inventory.Unknown:
			unknown[v.Reason]++
		}
	}
	for _, r := range inventory.OrphanReasons {
		if n := notAllowed[r]; n > 0 {
			fmt.Fprintf(w, "%s clean: %s skipped: %s (not in --remediation.reasons; add --remediation.reasons=%s)\n",
				name, count(n, "orphan"), r, joinReasons(append(slices.Clone(allowed), r)))
		}
	}
	for _, r := range slices.Sorted(maps.Keys(unknown)) {
		why := "the evidence is incomplete: never removed"
		if r == inventory.ReasonSettling {
			why = fmt.Sprintf("looked orphaned for less than --inventory.settle-time=%s", settle)
		}
		fmt.Fprintf(w, "%s clean: %s skipped: unknown (%s): %s\n", name, count(unknown[r], "veth"), r, why)
	}
	return devices
}

// count is "1 veth", "2 veths".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func joinReasons(rs []inventory.Reason) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = string(r)
	}
	return strings.Join(s, ",")
}

func writeAnswers(w io.Writer, answers []remediate.Answer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tIFINDEX\tRESULT\tREASON\tDETAIL")
	for _, a := range answers {
		ifindex := "-"
		if a.Ifindex != 0 {
			ifindex = strconv.Itoa(a.Ifindex)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", web.DeviceText(a.Device), ifindex, a.Result, dash(a.Reason), dash(a.Detail))
	}
	tw.Flush()
}

// handle removes the devices and, with --leaked-netns, the leaked
// namespaces, with --leases or --lease the leaked leases, and returns the
// answers of all, and how many of each kind it was asked about.
func (c *cleanCommand) handle(r *remediate.Remediator, devices []remediate.Device) (answers []remediate.Answer, asked []string, err error) {
	if len(devices) > 0 || (!c.leaked && !c.wantsLeases()) {
		a, err := r.HandleDevices(context.Background(), devices)
		if err != nil {
			return nil, nil, err
		}
		answers, asked = append(answers, a...), append(asked, fmt.Sprintf("%d veths", len(a)))
	}
	if c.leaked {
		a, err := r.HandleLeaked(context.Background())
		if err != nil {
			return nil, nil, fmt.Errorf("leaked namespaces: %w", err)
		}
		answers, asked = append(answers, a...), append(asked, fmt.Sprintf("%d leaked namespaces", len(a)))
	}
	if c.wantsLeases() {
		a, err := r.HandleLeases(context.Background(), c.leases)
		if err != nil {
			return nil, nil, fmt.Errorf("leaked leases: %w", err)
		}
		answers, asked = append(answers, a...), append(asked, fmt.Sprintf("%d leases", len(a)))
	}
	return answers, asked, nil
}

// wantsLeases: --leases or --lease was given.
func (c *cleanCommand) wantsLeases() bool {
	return c.allLeases || len(c.leases) > 0
}

// validLease reports whether s is an address, or NETWORK/ADDRESS with a
// network name libcni accepts.
func validLease(s string) bool {
	network, addr, ok := strings.Cut(s, "/")
	if !ok {
		addr, network = s, "x"
	}
	a, err := netip.ParseAddr(addr)
	return err == nil && a.String() == addr && network != "" && !strings.ContainsAny(network, "/ \t\n") && network != "." && network != ".."
}
