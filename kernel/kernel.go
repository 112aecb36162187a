// Package kernel reads what the Linux kernel knows about network
// interfaces and namespaces: one netlink link dump (of the host's
// namespace or, by nsid, another's), nsids and their release, the nsfs
// mounts in mountinfo, and which processes and threads are in which
// network namespace. It is the exporter's only access to netlink and to
// the namespace links of /proc.
//
// It only reads: it never creates, changes or deletes an interface or a
// namespace, and never enters one. It knows nothing of containers.
package kernel
