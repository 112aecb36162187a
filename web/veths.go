package web

import (
	"context"
	"embed"
	"html/template"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
)

// snapshotTimeout bounds the one snapshot a page or API request takes.
const snapshotTimeout = 30 * time.Second

//go:embed templates/veths.html
var templates embed.FS

// vethsPage is the template of GET /veths. html/template escapes every
// value: names that come from outside (container names, mount paths,
// device names) render as text, never as markup.
var vethsPage = template.Must(template.ParseFS(templates, "templates/veths.html"))

// vethsData is what the /veths template shows.
type vethsData struct {
	Taken    string
	Version  string
	Verdict  string // the verdict filter, "" for all
	Master   string // the master filter, "" for all, "-" for none
	Verdicts []string
	Masters  []string
	Counts   map[string]int
	Total    int
	Rows     []vethRow
	Leaked   []leakedRow
	Leases   []leaseRow
	Warnings []string
}

// leaseRow is a leaked address: a CNI DEL that never ran.
type leaseRow struct {
	Network, IP, Container, Owner, Since string
}

// vethRow is one veth of the table, and its evidence when it is orphaned.
type vethRow struct {
	Device, Ifindex, Master, OperState, PeerNetns, Procs, HeldBy, Owner string
	Verdict, Reason, Age                                                string
	Evidence                                                            *evidence
}

// evidence is why an orphan is one: what holds its namespace, who owned it
// last, since when it is orphaned, and the command that removes it.
type evidence struct {
	// PeerOnHost names the peer of a pair with both ends on the host.
	PeerOnHost    string
	PIDs          []int
	Mounts        []string
	LastOwner     string
	OrphanedSince string
	// Clean is the command that removes it, where the running exporter's
	// gates let it through; CleanNeeds, where they do not, the flags that
	// would, and CleanRefused why no flag would.
	Clean, CleanNeeds, CleanRefused string
	// CleanFrom is when clean stops refusing it as too young ("" when it
	// no longer does).
	CleanFrom string
}

type leakedRow struct {
	Netns  string
	Mounts []string
	Owner  string
}

// newVethsHandler serves the human page of the inventory.
func newVethsHandler(cfg Config) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		verdict, master := r.URL.Query().Get("verdict"), r.URL.Query().Get("master")
		switch inventory.Verdict(verdict) {
		case "", inventory.Owned, inventory.Orphaned, inventory.Unknown:
		default:
			http.Error(w, "verdict must be owned, orphaned or unknown", http.StatusBadRequest)
			return
		}
		snap, ok := snapshot(w, r, cfg)
		if !ok {
			return
		}
		data := vethsData{
			Taken:    snap.Taken.UTC().Format(time.DateTime + " MST"),
			Version:  cfg.Version,
			Verdict:  verdict,
			Master:   master,
			Verdicts: []string{string(inventory.Owned), string(inventory.Orphaned), string(inventory.Unknown)},
			Counts:   map[string]int{},
			Total:    len(snap.Veths),
			Warnings: snap.Warnings,
		}
		for i := range snap.Veths {
			v := &snap.Veths[i]
			data.Counts[string(v.Verdict)]++
			if m := Dash(v.Master); !slices.Contains(data.Masters, m) {
				data.Masters = append(data.Masters, m)
			}
			if (verdict != "" && string(v.Verdict) != verdict) || (master != "" && Dash(v.Master) != master) {
				continue
			}
			data.Rows = append(data.Rows, newVethRow(v, snap.Taken, cfg))
		}
		slices.Sort(data.Masters)
		for _, n := range snap.LeakedNetns {
			data.Leaked = append(data.Leaked, leakedRow{Netns: "net:[" + strconv.FormatUint(n.Inode, 10) + "]", Mounts: n.Mounts,
				Owner: LastOwnerText(n.LastOwner, n.LastOwnerSeen)})
		}
		for _, a := range snap.LeakedAddresses() {
			owner := "-"
			if a.Owner != nil {
				owner = DescribeOwner(a.Owner)
			}
			data.Leases = append(data.Leases, leaseRow{Network: a.Network, IP: a.IP, Container: ShortID(a.ContainerID), Owner: owner,
				Since: a.Since.UTC().Format(time.DateTime+" MST") + " (" + snap.Taken.Sub(a.Since).Truncate(time.Second).String() + " ago)"})
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := vethsPage.Execute(w, data); err != nil {
			cfg.Logger.Error("render /veths", "err", err)
		}
	}
}

func newVethRow(v *inventory.Veth, now time.Time, cfg Config) vethRow {
	row := vethRow{
		Device: v.Name, Ifindex: strconv.Itoa(v.Index), Master: Dash(v.Master), OperState: v.OperState,
		PeerNetns: PeerNetns(v), Procs: Procs(v), HeldBy: HeldBy(v), Owner: OwnerText(v),
		Verdict: string(v.Verdict), Reason: string(v.Reason), Age: Age(v, now, cfg.Sysfs),
	}
	if v.Verdict != inventory.Orphaned {
		return row
	}
	e := &evidence{LastOwner: "-", OrphanedSince: "-"}
	if n := v.PeerNetns; n != nil {
		e.PIDs, e.Mounts = n.PIDs, n.Mounts
	}
	if v.PeerOnHost {
		e.PeerOnHost = Dash(v.PeerName)
	}
	if v.LastOwner != nil {
		e.LastOwner = DescribeOwner(v.LastOwner)
		if !v.LastOwnerSeen.IsZero() {
			e.LastOwner += ", last seen " + v.LastOwnerSeen.UTC().Format(time.DateTime+" MST")
		}
	}
	if !v.OrphanedSince.IsZero() {
		e.OrphanedSince = v.OrphanedSince.UTC().Format(time.DateTime+" MST") +
			" (" + ShortDuration(now.Sub(v.OrphanedSince)) + " ago)"
	}
	if cfg.Clean != nil {
		cfg.Clean.advise(v, now, e)
	}
	row.Evidence = e
	return row
}

// CleanAdvice is what /veths needs to offer `veth_exporter clean` for an
// orphan only where clean would act on it as the running exporter's gates
// would: the gates, clean's own defaults, and the flags that bridge them.
type CleanAdvice struct {
	// Reasons, MasterInclude and DeviceExclude are the running exporter's
	// gates (--remediation.reasons, .master-include, .device-exclude);
	// MasterIncludeFlag is --remediation.master-include as given.
	Reasons           []inventory.Reason
	MasterInclude     *regexp.Regexp
	MasterIncludeFlag string
	DeviceExclude     *regexp.Regexp
	// MinAge is --remediation.min-age: clean refuses a younger orphan.
	MinAge time.Duration
	// DefaultReasons and DefaultMasterInclude are clean's defaults: an
	// orphan they refuse gets the running exporter's flag in its command.
	DefaultReasons       []inventory.Reason
	DefaultMasterInclude *regexp.Regexp
	// Flags go into every command, as --name=value: --state.path when it
	// is not the default (clean reads the running exporter's state), and
	// the gates whose value differs from clean's default.
	Flags []string
}

// advise fills e's clean command, or says what it would need.
func (a *CleanAdvice) advise(v *inventory.Veth, now time.Time, e *evidence) {
	var needs []string
	switch {
	case a.DeviceExclude != nil && a.DeviceExclude.MatchString(v.Name):
		e.CleanRefused = "its name matches --remediation.device-exclude"
		return
	case !slices.Contains(a.Reasons, v.Reason):
		needs = append(needs, "--remediation.reasons="+string(v.Reason))
	}
	if !a.MasterInclude.MatchString(v.Master) {
		alt := regexp.QuoteMeta(v.Master) // "" for none: an empty alternative
		needs = append(needs, "--remediation.master-include="+shellQuote(a.MasterIncludeFlag+"|"+alt))
	}
	if len(needs) > 0 {
		e.CleanNeeds = strings.Join(needs, " ")
		return
	}
	words := []string{"veth_exporter", "clean"}
	for _, f := range a.Flags {
		name, value, _ := strings.Cut(f, "=")
		words = append(words, name+"="+shellQuote(value))
	}
	if !slices.Contains(a.DefaultReasons, v.Reason) {
		words = append(words, "--remediation.reasons="+string(v.Reason))
	}
	if !a.DefaultMasterInclude.MatchString(v.Master) {
		words = append(words, "--remediation.master-include="+shellQuote(a.MasterIncludeFlag))
	}
	e.Clean = strings.Join(append(words, shellQuote(v.Name)), " ")
	if from := v.OrphanedSince.Add(a.MinAge); !v.OrphanedSince.IsZero() && from.After(now) {
		e.CleanFrom = from.UTC().Format(time.DateTime + " MST")
	}
}

// shellWord matches what a shell takes literally. Interface names may hold
// almost any byte but '/', ':' and white space, "$(…)" included: a command
// an operator pastes must quote them.
var shellWord = regexp.MustCompile(`^[A-Za-z0-9_.@%+=,/:-]+$`)

func shellQuote(s string) string {
	if s != "" && shellWord.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// newVethsAPIHandler serves the inventory document of
// [WriteInventoryJSON].
func newVethsAPIHandler(cfg Config) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		snap, ok := snapshot(w, r, cfg)
		if !ok {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if err := WriteInventoryJSON(w, snap); err != nil {
			cfg.Logger.Debug("write /api/v1/veths", "err", err)
		}
	}
}

// snapshot takes one fresh inventory for a request, or answers 503.
func snapshot(w http.ResponseWriter, r *http.Request, cfg Config) (*inventory.Snapshot, bool) {
	ctx, cancel := context.WithTimeout(r.Context(), snapshotTimeout)
	defer cancel()
	snap, err := cfg.Inventory.Snapshot(ctx)
	if err != nil {
		cfg.Logger.Error("inventory for "+r.URL.Path+" failed", "err", err)
		http.Error(w, "inventory failed: "+err.Error(), http.StatusServiceUnavailable)
		return nil, false
	}
	return snap, true
}

// discardLogger keeps handlers usable with a Config that names no logger.
func discardLogger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
