package remediate

// Reasons say why a request was not carried out as asked. They are stable
// strings: the webhook's response, the clean command's table, the log, the
// audit record and veth_remediation_refusals_total{reason} all use them.
// They are listed in the order they are checked.
const (
	// ReasonInvalidAlert: the alert carries a fingerprint longer than 64
	// bytes or a label whose name or value is longer than 256, checked
	// before anything else: not an alert of ours, neither remembered nor
	// echoed whole. (A name that long given to the clean command is
	// invalid_device, not echoed whole either.) Also a lease alert
	// (VethAddressRangeExhausting) whose network or range label is not a
	// CNI network name or a CIDR prefix.
	ReasonInvalidAlert = "invalid_alert"

	// ReasonResolved: the alert no longer fires; nothing is done for it
	// (skipped).
	ReasonResolved = "resolved"
	// ReasonInvalidDevice: the device label, or the name a human gave
	// (whatever its length), cannot be a Linux interface name (see
	// [ValidDeviceName]).
	ReasonInvalidDevice = "invalid_device"
	// ReasonInvalidIfindex: the alert's ifindex label is not an interface
	// index in the canonical form an exporter writes (see [ParseIfindex]).
	ReasonInvalidIfindex = "invalid_ifindex"
	// ReasonOtherNode: the alert's instance label names another node
	// (skipped): a device of the same name here is not the one meant.
	ReasonOtherNode = "other_node"
	// ReasonStartsInFuture: the alert says it started firing later than
	// now: a clock is wrong, and its age proves nothing.
	ReasonStartsInFuture = "starts_in_future"
	// ReasonAlertTooYoung: the alert has fired for less than the minimum
	// age, or does not say since when.
	ReasonAlertTooYoung = "alert_too_young"

	// ReasonInventoryFailed: the fresh inventory could not be taken;
	// nothing was decided (failed, worth a retry).
	ReasonInventoryFailed = "inventory_failed"
	// ReasonStaleState: no observation refreshed the exporter's history
	// within the maximum gap (the exporter was stopped, or nobody
	// scraped): anything may have lived in a leftover's namespace
	// meanwhile, so its orphaned-since times prove nothing.
	ReasonStaleState = "stale_state"
	// ReasonIncompleteView: a stage of the fresh inventory failed (a
	// runtime that is down, the process pass): a namespace it could not
	// account for is not proven leaked, and no leaked namespace is
	// released.
	ReasonIncompleteView = "incomplete_view"
	// ReasonNotVeth: an interface of that name exists, but it is not a
	// host-side veth.
	ReasonNotVeth = "not_a_veth"

	// ReasonIfindexMismatch: the veth of that name has another ifindex
	// now than the alert names: the name was given to a new veth.
	ReasonIfindexMismatch = "ifindex_mismatch"
	// ReasonNotOrphaned: the fresh inventory does not call the veth
	// orphaned: it is owned, the evidence is incomplete (the detail names
	// what the inventory cannot see), or it still settles (it has looked
	// orphaned for less than the settle time, whatever the minimum age).
	ReasonNotOrphaned = "not_orphaned"
	// ReasonReasonNotAllowed: the veth is orphaned for a reason the
	// operator did not allow remediation to act on.
	ReasonReasonNotAllowed = "reason_not_allowed"
	// ReasonNotRecorded: no observation before this request recorded the
	// veth as orphaned. Whatever the minimum age, an orphan first seen by
	// the request itself is not proof.
	ReasonNotRecorded = "not_recorded"
	// ReasonOrphanTooYoung: the exporter has recorded the veth orphaned
	// for less than the minimum age.
	ReasonOrphanTooYoung = "orphan_too_young"
	// ReasonMasterNotAllowed: the master bridge of the veth, or of the
	// peer on the host that its deletion takes along, does not match the
	// allowed masters ("" for none).
	ReasonMasterNotAllowed = "master_not_allowed"
	// ReasonDeviceExcluded: the name of the veth, or of the peer on the
	// host that its deletion takes along, matches the excluded devices.
	ReasonDeviceExcluded = "device_excluded"
	// ReasonCNINotReady: the node's CNI has a node agent and it does not
	// run; a restarting agent cleans up its own interfaces.
	ReasonCNINotReady = "cni_not_ready"
	// ReasonTooManyOrphans: more than the allowed share of the node's
	// veths look orphaned for a reason a failing resolver gives: that is
	// what a resolver failure looks like, and nothing is deleted. The
	// detail says how many of how many, which resolvers answered and
	// which failed, and the ratio that would let them through.
	ReasonTooManyOrphans = "too_many_orphans"
	// ReasonRequestLimit: the request's earlier devices already take the
	// deletions one request may make.
	ReasonRequestLimit = "request_limit"
	// ReasonHourlyLimit: the last hour's deletions and this request's
	// earlier ones already take what an hour may see.
	ReasonHourlyLimit = "hourly_limit"
	// ReasonNoPermission: remediation is enforced but the exporter lacks
	// CAP_NET_ADMIN, so it cannot delete.
	ReasonNoPermission = "no_permission"

	// ReasonDeadline: the request's deadline passed before the deletion;
	// nothing was done (failed, worth a retry).
	ReasonDeadline = "deadline"
	// ReasonAuditFailed: the audit intent could not be written, so
	// nothing was deleted: a deletion nobody could account for
	// afterwards does not happen.
	ReasonAuditFailed = "audit_failed"
	// ReasonNetlink: no netlink socket could be opened to delete with;
	// nothing was done (failed, worth a retry).
	ReasonNetlink = "netlink"
	// ReasonChanged: the veth changed between the inventory and the
	// deletion, and nothing was deleted: its ifindex names another link,
	// its peer moved or is missing from the inventory, or its peer's
	// namespace gained a process or an interface (it is in use again).
	ReasonChanged = "changed"
	// ReasonStillHeld: the mounts that pinned the veth's namespace were
	// released, and something else still holds the namespace alive (the
	// detail names it when it can be seen: a process, a descriptor, a
	// mount in another mount namespace): the veth stays, nothing else is
	// done to it.
	ReasonStillHeld = "still_held"
	// ReasonNotReleasable: method release, and the veth cannot be
	// released: a process holds its namespace, a mount outside the netns
	// directories pins it, it leads into a namespace with other veths not
	// approved, or the host's mount namespace cannot be entered. Nothing
	// was done. (Method auto deletes such a veth instead.) A leaked
	// lease is not releasable when the host's mount namespace, where its
	// DEL runs, cannot be entered.
	ReasonNotReleasable = "not_releasable"
	// ReasonDelete: the kernel refused the deletion, or the link is still
	// there after it.
	ReasonDelete = "delete"
)

// resultOf is the result of an answer with that reason: skipped for an
// alert that asks nothing of this node now, failed when something went
// wrong on the way (nothing was decided, or the kernel did not delete),
// refused for every gate that stopped a request on purpose.
func resultOf(reason string) Result {
	switch reason {
	case ReasonResolved, ReasonOtherNode:
		return ResultSkipped
	case ReasonInventoryFailed, ReasonDeadline, ReasonNetlink, ReasonDelete:
		return ResultFailed
	}
	return ResultRefused
}
