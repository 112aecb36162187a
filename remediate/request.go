package remediate

import "time"

// request asks for one veth to go: from an alert, or from a human who
// named a device (no alert: no fingerprint, no startsAt).
type request struct {
	Device string
	// Index is the ifindex the asker saw; 0 when it did not say.
	Index int
	// StartsAt is when the alert started firing; zero for a device a
	// human named, which has no alert.
	StartsAt    time.Time
	Fingerprint string
	// Resolved: the alert no longer fires; nothing is done for it.
	Resolved bool
	// BadIndex: the alert's ifindex label is not a valid ifindex.
	BadIndex string
	// OtherNode: the alert's instance label does not name this node.
	OtherNode bool
	// Instance is the value of the alert's instance label ("" when it
	// has none): part of what a cached answer is for. HasInstance says
	// whether it has one.
	Instance    string
	HasInstance bool
	// LongLabel names a label of the alert whose name or value is longer
	// than any alert of ours has; "" when none is.
	LongLabel string
	// Named: a human named the device (the clean command); there is no
	// alert.
	Named bool
	// LeaseNetwork and LeaseRange: a lease alert ([LeaseAlert]) for that
	// range of that CNI network; Device is then <network>/<range>.
	LeaseNetwork, LeaseRange string
}

// lease reports whether q is a lease alert.
func (q request) lease() bool { return q.LeaseRange != "" || q.LeaseNetwork != "" }

// Device names a veth a human asked to remove (the clean command): by
// name, and by the ifindex the asker saw, when it saw one.
type Device struct {
	Name string
	// Index is 0 when the asker did not say.
	Index int
}

// alertRequests turns each alert of p into a request: the veth its device
// label names, by the ifindex its ifindex label gives, if any. inst says
// which alerts are for this node.
func alertRequests(p *Payload, inst Instance) []request {
	reqs := make([]request, len(p.Alerts))
	for i, a := range p.Alerts {
		reqs[i] = request{
			Device:      a.Labels["device"],
			StartsAt:    a.StartsAt,
			Fingerprint: a.Fingerprint,
			Resolved:    !a.Firing(),
			OtherNode:   !inst.Matches(a.Labels),
			Instance:    a.Labels[inst.Label],
			LongLabel:   longLabel(a.Labels),
		}
		_, reqs[i].HasInstance = a.Labels[inst.Label]
		if a.Labels["alertname"] == LeaseAlert {
			q := &reqs[i]
			q.LeaseNetwork, q.LeaseRange = a.Labels["network"], a.Labels["range"]
			q.Device = q.LeaseNetwork + "/" + q.LeaseRange
			continue
		}
		if s, ok := a.Labels["ifindex"]; ok {
			if idx, err := ParseIfindex(s); err != nil {
				reqs[i].BadIndex = s
			} else {
				reqs[i].Index = idx
			}
		}
	}
	return reqs
}

// longLabel returns the name of a label whose name or value is longer
// than maxLabel bytes, the first in name order; "" when there is none.
func longLabel(labels map[string]string) string {
	long := ""
	for k, v := range labels {
		if (len(k) > maxLabel || len(v) > maxLabel) && (long == "" || k < long) {
			long = k
		}
	}
	return long
}

// deviceRequests turns each device a human named into a request.
func deviceRequests(devices []Device) []request {
	reqs := make([]request, len(devices))
	for i, d := range devices {
		reqs[i] = request{Device: d.Name, Index: d.Index, Named: true}
	}
	return reqs
}

// Answer is what became of one request.
type Answer struct {
	Device  string `json:"device"`
	Ifindex int    `json:"ifindex,omitempty"`
	Result  Result `json:"result"`
	Reason  string `json:"reason,omitempty"`
	// Detail explains a refusal or a failure for a human.
	Detail string `json:"detail,omitempty"`
	// Method is how the remover went about the veth (release or
	// delete), empty when no gate let it that far.
	Method Method `json:"method,omitempty"`
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
