package remediate

import "time"

// Request asks for one veth to go: from an alert, or from the clean
// command (no alert: no fingerprint, no startsAt).
type Request struct {
	Device string
	// Index is the ifindex the asker saw; 0 when it did not say.
	Index int
	// StartsAt is when the alert started firing; zero for the clean
	// command, which has no alert.
	StartsAt    time.Time
	Fingerprint string
	// Resolved: the alert no longer fires; nothing is done for it.
	Resolved bool
	// BadIndex: the alert's ifindex label is not a valid ifindex.
	BadIndex string
}

// Answer is what became of one Request.
type Answer struct {
	Device  string `json:"device"`
	Ifindex int    `json:"ifindex,omitempty"`
	Result  Result `json:"result"`
	Reason  string `json:"reason,omitempty"`
	// Detail explains a refusal or a failure for a human.
	Detail string `json:"detail,omitempty"`
}

// Result is the outcome of one request to remove one veth.
type Result string

// The results, as the webhook's response and the actions metric name them.
const (
	ResultDeleted     Result = "deleted"
	ResultWouldDelete Result = "would_delete"
	// ResultGone: the veth the exporter recorded no longer exists;
	// someone else was first.
	ResultGone Result = "gone"
	// ResultNotFound: no such interface, and the exporter never recorded
	// one of that name (a typo, or another node's device).
	ResultNotFound Result = "not_found"
	ResultRefused  Result = "refused"
	ResultSkipped  Result = "skipped"
	ResultFailed   Result = "failed"
)

// Results lists every result, for metrics that show them all from the start.
var Results = []Result{ResultDeleted, ResultWouldDelete, ResultGone, ResultNotFound, ResultRefused, ResultSkipped, ResultFailed}

// Transient reports whether a failed answer is worth a retry: nothing was
// decided about the device.
func (a Answer) Transient() bool {
	return a.Result == ResultFailed && (a.Reason == ReasonInventoryFailed || a.Reason == ReasonDeadline || a.Reason == ReasonNetlink)
}
