# The image holds only the static binary that `make build` produces, as the
# Prometheus exporters' images do; no base image is needed.
#
#   make build && docker build -t veth-exporter .
#
# Run it in the host's network namespace (the veths live there) and PID
# namespace (its /proc then lists the processes holding each peer
# namespace), with the host's /run mounted rslave so the nsfs mounts in
# /run/netns and /run/docker/netns, including those made later, are seen at
# their host paths, the host's cgroup namespace so that /proc/PID/cgroup
# shows whole paths (docker-<id>.scope, kubepods…pod<uid>),
# CAP_SYS_PTRACE to read every process's namespace, and a volume for the
# state file:
#
#   docker run -d --name veth_exporter \
#     --net=host --pid=host --cgroupns=host --cap-add=SYS_PTRACE \
#     -v /run:/run:ro,rslave \
#     -v /var/lib/veth_exporter:/var/lib/veth_exporter \
#     veth-exporter
#
# Where the host's /proc and / are mounted elsewhere instead, point
# --path.procfs and --path.rootfs at them.
FROM scratch
COPY veth_exporter /bin/veth_exporter
EXPOSE 9750
USER 0
ENTRYPOINT ["/bin/veth_exporter"]
