// Package remediate removes leftover veths, and only those: it deletes
// nothing unless every safety gate passed for that very interface, and an
// alert, however well formed, is a request to check, never a proof.
//
// Two callers ask, each through its own entry point, and both go the same
// way after it:
//
//  1. Input. [Remediator.HandleAlerts] takes an Alertmanager webhook
//     payload ([DecodePayload] reads the body of POST /remediate);
//     [Remediator.HandleDevices] takes the devices a human named to the
//     clean command. Each makes one request per veth (request.go).
//  2. Gates on the request alone, in the entry point's own order
//     (alertGates, deviceGates in gates.go): whether the alert fires, is
//     for this node and has fired long enough; whether the name can be an
//     interface's. A re-sent alert gets the answer it got before
//     (answercache.go).
//  3. A fresh inventory, whose build starts after the request, and the
//     gates on each veth as it shows there, the same for both callers
//     (historyFresh, vethGates): still the same veth, orphaned for an
//     allowed reason, recorded so by an earlier observation long enough
//     ago, master and name allowed, the blast-radius limits,
//     CAP_NET_ADMIN.
//  4. Removal, in enforce mode only (deletion.go): the audit intent
//     first; then the remover (cleanup.go), by the configured method.
//     Release (release.go, hostmnt.go), for a veth whose namespace only
//     mounts hold: in the host's mount namespace, unmount each pin
//     verified at that moment to be that namespace's, and wait for the
//     kernel to free the namespace, which it does if and only if nothing
//     else holds it; what does is named (still_held). Delete (cleanup.go,
//     group.go), where no release is possible: pin each peer namespace,
//     re-check its processes, threads and interfaces at the last moment
//     (a pass, and listings of what started since), delete by a verified
//     ifindex, several veths as one interface group, verify each is gone.
//  5. Audit: every answer, whatever it is, is counted (metrics.go), logged
//     and written to the audit file (audit.go); each refusal, skip or
//     failure names one of the reasons of reasons.go.
//
// The package must never delete an interface by its name alone, act on an
// inventory taken before the request or on an orphan no earlier
// observation recorded, delete what any gate refused or in dry-run, delete
// anything whose audit intent could not be written, touch a link other
// than the approved veths (and the peers that die with them), release a
// namespace any veth not approved leads into, unmount outside the
// configured netns directories or a mount not verified at that moment,
// execute anything in the host's mount namespace, or read flags and
// global state: its callers pass every setting in.
package remediate
