package remediate

import (
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/veth-exporter/veth_exporter/inventory"
	"github.com/veth-exporter/veth_exporter/remediate/cnidel"
)

// Mode says what remediation may do.
type Mode string

// The modes. Off is the default: the webhook is not even mounted.
const (
	ModeOff     Mode = "off"
	ModeDryRun  Mode = "dry-run"
	ModeEnforce Mode = "enforce"
)

// Config holds the gates' settings; nothing here reads flags.
type Config struct {
	Mode Mode
	// Instance says which alerts are for this node: the others are
	// skipped (other_node). A zero Instance takes no alert for this
	// node's. Devices a human names have no alert, and no instance.
	Instance Instance
	// MinAge: an alert must have fired, and the veth have been orphaned,
	// at least this long.
	MinAge time.Duration
	// Reasons are the orphan reasons remediation may act on.
	Reasons []inventory.Reason
	// MasterInclude must match the veth's master bridge ("" when none);
	// DeviceExclude must not match its name.
	MasterInclude *regexp.Regexp
	DeviceExclude *regexp.Regexp
	// MaxPerRequest and MaxPerHour bound deletions; MaxOrphanRatio stops
	// every deletion while more than that share of the node's veths look
	// orphaned at once: that is a resolver failure, not a leak.
	MaxPerRequest  int
	MaxPerHour     int
	MaxOrphanRatio float64
	// MaxStateGap: the history behind orphaned-since times must have been
	// refreshed by an observation at most this long before the request;
	// 0 does not check (tests).
	MaxStateGap time.Duration
	// AuditFile receives one JSON line per intent, action or refusal; ""
	// logs only.
	AuditFile string
	// AuditBy names the caller in each audit line: "webhook" or "clean".
	// A serving exporter counts the clean command's results it finds in
	// the audit file ([Metrics.FollowAudit]).
	AuditBy string
	// AnswerLogLevel is the level answers are logged at (the clean
	// command prints a table and logs them at debug only).
	AnswerLogLevel slog.Level
	// Method says whether a leftover is released or deleted.
	Method Method
	// NetnsDirs are the only directories a release unmounts in (host
	// paths: the release works in the host's mount namespace).
	NetnsDirs []string
	// ReleaseTimeout bounds the wait for the kernel to free a released
	// namespace.
	ReleaseTimeout time.Duration
	// Paths are where the host's /proc and / are seen.
	Paths inventory.Paths
	// Resolvers name the runtime resolvers that are on (their steps in a
	// snapshot): a refusal of the orphan ratio guard says which answered.
	Resolvers []string
	// CNI runs the CNI DELs that never ran, for leaked leases; nil
	// releases none.
	CNI *cnidel.Deleter
}

// ParseReasons turns lists of orphan reasons, each comma-separated, into
// the reasons remediation may act on; anything but an orphan reason is
// an error.
func ParseReasons(lists []string) ([]inventory.Reason, error) {
	var reasons []inventory.Reason
	for _, list := range lists {
		for _, s := range strings.Split(list, ",") {
			r := inventory.Reason(strings.TrimSpace(s))
			if !slices.Contains(inventory.OrphanReasons, r) {
				return nil, fmt.Errorf("%q is not an orphan reason (%s)", s, joinReasons(inventory.OrphanReasons))
			}
			if !slices.Contains(reasons, r) {
				reasons = append(reasons, r)
			}
		}
	}
	return reasons, nil
}

func joinReasons(rs []inventory.Reason) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}

// Bounds on what an alert may carry. Alertmanager's fingerprints are 16
// hex digits and interface names at most 15 bytes: anything much longer
// is not an alert of ours, and is not worth remembering.
const (
	maxFingerprint = 64
	maxLabel       = 256
)

// Method is how remediation removes a leftover.
type Method string

// The methods.
const (
	// MethodAuto releases where the kernel can decide (a namespace only
	// mounts hold, the host's mount namespace can be entered) and deletes
	// elsewhere.
	MethodAuto Method = "auto"
	// MethodRelease only releases: it removes the mounts that pin a
	// leftover's namespace and lets the kernel free the namespace, with
	// its veths, if and only if nothing else holds it. A pair left on the
	// host, which has no namespace to release, is deleted.
	MethodRelease Method = "release"
	// MethodDelete deletes the veth after a last look at the namespace's
	// processes and threads: a window the look narrows and cannot close.
	MethodDelete Method = "delete"
)

// Methods are the methods, for flags and help.
var Methods = []Method{MethodAuto, MethodRelease, MethodDelete}
