#!/usr/bin/env bash
# compare.sh builds a node-sized veth fixture in a private network and mount
# namespace and reports, side by side, the median scrape time and peak RSS of
# veth_exporter (GET /metrics plain and with Accept-Encoding: gzip), of
# node_exporter's netclass collector (sysfs mode), of a bare netlink link
# dump (bench/linkdump) and of the kernel's own dump through iproute2
# (ip -d -o link show), with the targets of the issues as PASS/FAIL lines. See bench/README.md. Nothing here touches the machine's own
# network namespace: the fixture exists only in the private one and vanishes
# with it.
#
# Environment: VETHS (10000), NAMESPACES (500), SCRAPES (20),
# VETH_EXPORTER (<repo>/veth_exporter), NODE_EXPORTER
# (/usr/bin/prometheus-node-exporter).
#
# Exit status: 0 when the report was printed, whatever the targets say;
# 1 on a setup error; 3 when a subject that was started never answered or
# failed its warm-up scrape.
#
# With --docker (or DOCKER=1) it measures instead the Docker resolver on a
# node of VETH_BENCH_CONTAINERS (200) running containers: the scrape time
# with and without the resolver and the Docker API requests per scrape, by
# running BenchmarkDockerScrape (cmd/veth_exporter/docker_bench_test.go),
# whose harness starts a dockerd in private namespaces of its own. Exit
# status there: 0 when the benchmark passed (its own assertions included),
# 1 on a setup error, 3 when it failed; the report is printed in both of
# the last two cases. With --cri (or CRI=1) the same for the CRI resolver
# on a node of VETH_BENCH_PODS (100) pod sandboxes of a private containerd
# (BenchmarkCRIScrape in cmd/veth_exporter/cri_bench_test.go).
set -euo pipefail

VETHS=${VETHS:-10000}
NAMESPACES=${NAMESPACES:-500}
SCRAPES=${SCRAPES:-20}

self=$(readlink -f "${BASH_SOURCE[0]}")
repo=$(dirname "$(dirname "$self")")
VETH_EXPORTER=${VETH_EXPORTER:-$repo/veth_exporter}
NODE_EXPORTER=${NODE_EXPORTER:-/usr/bin/prometheus-node-exporter}

# Both exporters listen inside the private namespace, so fixed ports cannot
# clash with anything on the machine.
VETH_PORT=9181
NODE_PORT=9182

# A Linux bridge refuses its 1,025th port ("Exchange full"); 900 leaves room.
PORTS_PER_BRIDGE=900

log() { printf '%s compare.sh: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }

# inner runs inside `unshare -n -m`: it builds the fixture, measures each
# subject and prints the report. $1 is the work directory made by the outer
# half (it is under /tmp, which stays shared, unlike the private /run).
inner() {
	local work=$1
	local -a holders=()
	local subject_pid=

	stop_subject() {
		if [[ -n $subject_pid ]]; then
			kill "$subject_pid" 2>/dev/null || true
			wait "$subject_pid" 2>/dev/null || true
			subject_pid=
		fi
	}
	cleanup() {
		stop_subject
		# Killing the holders and leaving the namespace is the whole teardown:
		# the kernel destroys the 10,000 links with their namespaces in batches,
		# where deleting them one by one would cost about 20 ms each.
		if ((${#holders[@]})); then
			kill -KILL "${holders[@]}" 2>/dev/null || true
			wait "${holders[@]}" 2>/dev/null || true
		fi
	}
	trap cleanup EXIT
	trap 'exit 130' INT TERM

	mount -t sysfs sysfs /sys
	mount -t tmpfs tmpfs /run
	mkdir -p /run/netns
	ip link set lo up
	# Without IPv6 the 10,000 new ports do not run DAD and MLD timers in the
	# background while the subjects are timed; no subject reads addresses.
	sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1

	local n_proc=$((NAMESPACES * 4 / 5))
	local n_mount=$((NAMESPACES - n_proc))
	local per=$((VETHS / NAMESPACES)) extra=$((VETHS % NAMESPACES))
	local n_bridges=$(((VETHS + PORTS_PER_BRIDGE - 1) / PORTS_PER_BRIDGE))
	local t0 t1 b i k j

	log "fixture: $VETHS veths in $NAMESPACES namespaces ($n_proc held by a process, $n_mount by a bind mount only), $n_bridges bridges"
	t0=$(now_ms)

	# Holders get SIGKILL from the kernel when this shell dies, even by
	# SIGKILL, so a crashed run cannot leave 400 namespaces behind.
	for ((i = 0; i < n_proc; i++)); do
		setpriv --pdeathsig KILL unshare -n sleep infinity &
		holders+=($!)
	done
	# Until unshare(2) has run, /proc/PID/ns/net is still this namespace, and
	# a peer moved there would land on the host side of the fixture.
	for i in "${holders[@]}"; do
		until [[ -e /proc/$i/ns/net && ! /proc/$i/ns/net -ef /proc/self/ns/net ]]; do
			kill -0 "$i" 2>/dev/null || die "namespace holder $i exited"
			sleep 0.01
		done
	done

	{
		for ((b = 0; b < n_bridges; b++)); do
			echo "link add br$b type bridge"
			echo "link set br$b up"
		done
		for ((i = n_proc; i < NAMESPACES; i++)); do
			echo "netns add bm$i"
		done
		j=0
		for ((i = 0; i < NAMESPACES; i++)); do
			local target=bm$i count=$per
			((i < n_proc)) && target=${holders[i]}
			((i < extra)) && count=$((per + 1))
			for ((k = 0; k < count; k++, j++)); do
				echo "link add vb${i}x$k master br$((j % n_bridges)) up type veth peer name eth$k netns $target"
			done
		done
	} >"$work/fixture.batch"
	ip -force -batch "$work/fixture.batch" || die "building the fixture failed"

	# Peers up, as in a running container, so the host ends report UP. IPv6
	# goes off first: 10,000 peers starting DAD and MLD at once flood every
	# bridge port with multicast and keep softirqs and the RTNL lock busy for
	# a minute or more, which would be timed as part of every scrape.
	for count in "$per" "$((per + 1))"; do
		{
			echo "link set lo up"
			for ((k = 0; k < count; k++)); do echo "link set eth$k up"; done
		} >"$work/peers$count.batch"
	done
	cat >"$work/peers.sh" <<-'EOF'
		echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6
		echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6
		exec ip -batch "$1"
	EOF
	for ((i = 0; i < NAMESPACES; i++)); do
		local count=$per ns=/run/netns/bm$i
		((i < extra)) && count=$((per + 1))
		((i < n_proc)) && ns=/proc/${holders[i]}/ns/net
		nsenter --net="$ns" sh "$work/peers.sh" "$work/peers$count.batch" ||
			die "setting up the peers in $ns failed"
	done

	t1=$(now_ms)
	local n_links n_veths
	n_links=$(ip -o link show | wc -l)
	n_veths=$(ip -o link show type veth | wc -l)
	((n_veths == VETHS)) || die "fixture has $n_veths veths, want $VETHS"
	log "fixture built in $(((t1 - t0) / 1000)).$(((t1 - t0) % 1000 / 100)) s: $n_links links in the host dump"

	local -A med=() rss=() note=()
	local failed=0 load
	# Timings on a shared machine are only as quiet as its neighbours.
	read -r load _ </proc/loadavg

	# linkdump prints one line of key=value pairs.
	log "bare netlink dump: $SCRAPES dumps after one warm-up"
	local line kv key value
	line=$("$work/linkdump" -n "$SCRAPES") || die "linkdump failed"
	for kv in $line; do
		key=${kv%%=*} value=${kv#*=}
		case $key in
		median_ms) med[dump]=$value ;;
		vmhwm_kb) rss[dump]=$value ;;
		esac
	done
	log "bare netlink dump: $line"

	# median_ms SECONDS... prints the median of its arguments in ms.
	median_ms() {
		printf '%s\n' "$@" | sort -g | awk '
			{ v[NR] = $1 }
			END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.3f", m * 1000 }'
	}
	# time_ip_dump prints how long one `ip -d -o link show` of the fixture
	# took, in seconds: the kernel's own dump of every link with its
	# details, as iproute2 asks for it and prints it, the command included
	# (its start costs about a millisecond).
	time_ip_dump() {
		local t0=$EPOCHREALTIME t1
		ip -d -o link show >/dev/null || die "ip -d -o link show failed"
		t1=$EPOCHREALTIME
		awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", b - a }'
	}

	# measure NAME URL LOGFILE -- COMMAND... starts one exporter, scrapes it
	# once to warm up and $SCRAPES times timed, and records the median and
	# the peak RSS, or a note saying why it has none.
	measure() {
		local name=$1 url=$2 logfile=$3
		shift 4
		log "$name: starting $1"
		# Like the holders, a subject must not outlive a killed run: it would
		# keep the private namespaces, and the whole fixture, alive.
		setpriv --pdeathsig KILL "$@" >"$logfile" 2>&1 &
		subject_pid=$!

		local deadline=$(($(now_ms) + 60000))
		until curl -s -o /dev/null --max-time 5 "${url%/metrics}/"; do
			if ! kill -0 "$subject_pid" 2>/dev/null || (($(now_ms) > deadline)); then
				note[$name]="did not answer on $url, log: $logfile"
				log "$name: ${note[$name]}"
				tail -n 5 "$logfile" >&2 || true
				failed=1
				stop_subject
				return
			fi
			sleep 0.2
		done

		local code t s
		local -a times=()
		code=$(curl -s -o "$work/$name.prom" -w '%{http_code}' --max-time 600 "$url") || true
		if [[ $code != 200 ]]; then
			note[$name]="warm-up scrape of $url answered HTTP $code, log: $logfile"
			log "$name: ${note[$name]}"
			failed=1
			stop_subject
			return
		fi
		log "$name: warm-up scrape: $(wc -c <"$work/$name.prom") bytes, $(grep -c '^[a-z]' "$work/$name.prom" || true) samples, $(grep -o 'device="vb[0-9]*x[0-9]*"' "$work/$name.prom" | sort -u | wc -l) fixture devices"
		# veth_exporter is also scraped as Prometheus scrapes it, with
		# Accept-Encoding: gzip (curl keeps the body compressed: the time is
		# the exporter's, not curl's inflating), and each of its scrapes
		# follows one `ip -d -o link show`: the three interleaved, so that
		# what else runs on the machine weighs on each alike.
		local gzipped=0
		if [[ $name == veth_exporter ]]; then
			gzipped=1
			read -r code t s < <(curl -s -o /dev/null -H 'Accept-Encoding: gzip' \
				-w '%{http_code} %{time_total} %{size_download}\n' --max-time 600 "$url")
			[[ $code == 200 ]] || log "$name: warm-up scrape with gzip answered HTTP $code"
			log "$name: warm-up scrape with gzip: $s bytes"
			log "ip -d -o link show: $(ip -d -o link show | wc -l) links"
		fi
		local -a gz_times=() ip_times=()
		for ((s = 0; s < SCRAPES; s++)); do
			if ((gzipped)); then
				ip_times+=("$(time_ip_dump)")
			fi
			read -r code t < <(curl -s -o /dev/null -w '%{http_code} %{time_total}\n' --max-time 600 "$url")
			[[ $code == 200 ]] || log "$name: scrape $s answered HTTP $code"
			times+=("$t")
			if ((gzipped)); then
				read -r code t < <(curl -s -o /dev/null -H 'Accept-Encoding: gzip' \
					-w '%{http_code} %{time_total}\n' --max-time 600 "$url")
				[[ $code == 200 ]] || log "$name: scrape $s with gzip answered HTTP $code"
				gz_times+=("$t")
			fi
		done
		med[$name]=$(median_ms "${times[@]}")
		rss[$name]=$(awk '/^VmHWM:/ { print $2 }' "/proc/$subject_pid/status")
		log "$name: median ${med[$name]} ms, VmHWM ${rss[$name]} kB"
		if ((gzipped)); then
			med[${name}_gzip]=$(median_ms "${gz_times[@]}")
			med[ip]=$(median_ms "${ip_times[@]}")
			log "$name: median with gzip ${med[${name}_gzip]} ms; ip -d -o link show: median ${med[ip]} ms"
		fi

		stop_subject
	}

	if [[ -x $VETH_EXPORTER && -f $VETH_EXPORTER ]]; then
		measure veth_exporter "http://127.0.0.1:$VETH_PORT/metrics" "$work/veth_exporter.log" -- \
			"$VETH_EXPORTER" --web.listen-address="127.0.0.1:$VETH_PORT" --state.path="$work/state.json"
	else
		note[veth_exporter]="skipped: no executable at $VETH_EXPORTER (go build -o veth_exporter ./cmd/veth_exporter, or set VETH_EXPORTER)"
		log "veth_exporter: ${note[veth_exporter]}"
	fi
	if [[ -z ${med[ip]:-} ]]; then
		local -a ip_times=()
		local s
		for ((s = 0; s < SCRAPES; s++)); do ip_times+=("$(time_ip_dump)"); done
		med[ip]=$(median_ms "${ip_times[@]}")
		log "ip -d -o link show: median ${med[ip]} ms"
	fi

	if [[ -x $NODE_EXPORTER ]]; then
		measure node_exporter "http://127.0.0.1:$NODE_PORT/metrics" "$work/node_exporter.log" -- \
			"$NODE_EXPORTER" --collector.disable-defaults --collector.netclass \
			--no-collector.netclass.netlink --web.listen-address="127.0.0.1:$NODE_PORT"
		if [[ -n ${med[node_exporter]:-} ]] &&
			! grep -q '^node_scrape_collector_success{collector="netclass"} 1' "$work/node_exporter.prom"; then
			log "node_exporter: the netclass collector reported a failure, see $work/node_exporter.prom"
		fi
	else
		note[node_exporter]="skipped: no executable at $NODE_EXPORTER (apt-get install -y prometheus-node-exporter)"
		log "node_exporter: ${note[node_exporter]}"
	fi

	report
	trap - EXIT
	cleanup
	return $((failed ? 3 : 0))
}

# report prints the table and the target checks from the med, rss and note
# arrays of inner.
report() {
	local -A label=([dump]="bare netlink dump" [ip]="ip -d -o link show" [veth_exporter]="veth_exporter"
		[veth_exporter_gzip]="veth_exporter, gzip" [node_exporter]="node_exporter netclass")
	local s
	echo
	echo "fixture: $VETHS veths, peers in $NAMESPACES namespaces ($n_proc held by a process, $n_mount by a bind mount only), $n_bridges bridges; $n_links links in the host dump"
	echo "median of $SCRAPES scrapes after one warm-up; veth_exporter's scrapes, plain and gzip, interleaved with ip -d -o link show"
	echo "1-minute load average when measuring started: $load"
	echo
	printf '%-24s %20s %15s %20s %16s\n' subject "median scrape (ms)" "peak RSS (MB)" "ratio vs bare dump" "ratio vs ip -d"
	for s in dump ip veth_exporter veth_exporter_gzip node_exporter; do
		if [[ -n ${med[$s]:-} ]]; then
			# The gzip scrapes are the same process as the plain ones: one RSS.
			awk -v l="${label[$s]}" -v m="${med[$s]}" -v r="${rss[${s%_gzip}]:-}" -v d="${med[dump]}" -v i="${med[ip]}" \
				'BEGIN { printf "%-24s %20.2f %15s %19.2fx %15.2fx\n", l, m, r == "" ? "-" : sprintf("%.1f", r / 1024), m / d, m / i }'
		else
			printf '%-24s %s\n' "${label[$s]}" "${note[${s%_gzip}]:-no result}"
		fi
	done
	echo

	check() { # check DESCRIPTION OK VALUE, or SKIP when VALUE is empty
		if [[ -z $3 ]]; then
			printf 'SKIP  %s\n' "$1"
		elif [[ $2 == 1 ]]; then
			printf 'PASS  %s: %s\n' "$1" "$3"
		else
			printf 'FAIL  %s: %s\n' "$1" "$3"
		fi
	}
	local v ok
	if [[ -n ${med[veth_exporter]:-} ]]; then
		v=$(awk -v a="${med[veth_exporter]}" -v b="${med[dump]}" 'BEGIN { printf "%.2fx", a / b }')
		ok=$(awk -v a="${med[veth_exporter]}" -v b="${med[dump]}" 'BEGIN { print (a <= 1.5 * b) }')
		check "veth_exporter scrape <= 1.5x bare dump" "$ok" "$v"
	else
		check "veth_exporter scrape <= 1.5x bare dump" 0 ""
	fi
	local gz
	for gz in "" _gzip; do
		local what="veth_exporter scrape${gz:+ with gzip} <= 1.0x ip -d -o link show"
		if [[ -n ${med[veth_exporter$gz]:-} ]]; then
			v=$(awk -v a="${med[veth_exporter$gz]}" -v b="${med[ip]}" 'BEGIN { printf "%.2fx", a / b }')
			ok=$(awk -v a="${med[veth_exporter$gz]}" -v b="${med[ip]}" 'BEGIN { print (a <= b) }')
			check "$what" "$ok" "$v"
		else
			check "$what" 0 ""
		fi
	done
	if [[ -n ${med[veth_exporter]:-} && -n ${med[node_exporter]:-} ]]; then
		v=$(awk -v a="${med[node_exporter]}" -v b="${med[veth_exporter]}" 'BEGIN { printf "%.1fx", a / b }')
		ok=$(awk -v a="${med[node_exporter]}" -v b="${med[veth_exporter]}" 'BEGIN { print (a >= 10 * b) }')
		check "veth_exporter >= 10x faster than node_exporter netclass" "$ok" "$v"
	else
		check "veth_exporter >= 10x faster than node_exporter netclass" 0 ""
	fi
	if [[ -n ${rss[veth_exporter]:-} ]]; then
		v=$(awk -v r="${rss[veth_exporter]}" 'BEGIN { printf "%.1f MB", r / 1024 }')
		ok=$(awk -v r="${rss[veth_exporter]}" 'BEGIN { print (r <= 64 * 1024) }')
		check "veth_exporter peak RSS <= 64 MB" "$ok" "$v"
	else
		check "veth_exporter peak RSS <= 64 MB" 0 ""
	fi
}

if [[ ${1:-} == --inner ]]; then
	inner "$2"
	exit
fi

# The work directory ($work: logs, first scrapes, the benchmark's output)
# stays for a look when something went wrong; a clean run leaves nothing behind.
# shellcheck disable=SC2317 # run by the EXIT trap
finish() {
	local rc=$?
	if ((rc == 0)); then
		rm -rf "$work"
	else
		log "logs and scrape output kept in $work"
	fi
}

# resolver_mode RUNTIME runs the runtime resolver's scrape benchmark
# (BenchmarkDockerScrape or BenchmarkCRIScrape) and prints its report: the
# Go harness (internal/dockertest, internal/critest) makes the runtime,
# its containers or pods and both exporters inside the private namespaces
# of netnstest, and removes them.
resolver_mode() {
	local bench env default unit limit node churn
	local -a setups
	case $1 in
	docker)
		bench=BenchmarkDockerScrape env=VETH_BENCH_CONTAINERS default=200 unit="Docker API" limit=3
		node="running containers (busybox, one veth each on docker0), dockerd 20.10 in private namespaces"
		churn="1 restart per scrape" setups=('dockerd up' 'started [0-9]+ containers' 'removed [0-9]+ containers')
		;;
	cri)
		bench=BenchmarkCRIScrape env=VETH_BENCH_PODS default=100 unit="CRI" limit=1
		node="pod sandboxes in 5 namespaces (one veth each on cni0), containerd 1.6 CRI in private namespaces"
		churn="1 pod replaced per scrape" setups=('containerd up' 'ran [0-9]+ pods')
		;;
	esac
	local containers=${!env:-$default}
	[[ $containers =~ ^[1-9][0-9]*$ ]] || die "$env must be a positive integer, not '$containers'"
	[[ $SCRAPES =~ ^[1-9][0-9]*$ ]] || die "SCRAPES must be a positive integer, not '$SCRAPES'"
	((EUID == 0)) || die "must run as root (the harness creates namespaces and starts the runtime)"
	command -v go >/dev/null || die "go not found"

	work=$(mktemp -d /tmp/veth-bench.XXXXXX)
	trap finish EXIT
	local out=$work/$1-bench.txt load rc=0
	read -r load _ </proc/loadavg
	log "$bench: $containers $node, $SCRAPES timed scrapes per subject (setup takes about a minute)"
	# -v: a benchmark's log (setup times) is shown only with it.
	# VETH_EXPORTER_REQUIRE_PRIVILEGED=1: a missing runtime installation
	# fails the run instead of skipping the benchmark in silence.
	(cd "$repo" && env "$env=$containers" VETH_EXPORTER_REQUIRE_PRIVILEGED=1 \
		go test -v -count=1 -run '^$' -bench "^$bench\$" -benchtime "${SCRAPES}x" \
		-timeout 30m ./cmd/veth_exporter/) 2>&1 | tee "$out" | sed -u 's/^/    /' >&2 || rc=$?

	# One line per sub-benchmark: name mean_ms median_ms calls veths.
	local -A mean=() median=() calls=() veths=()
	local name a b c d
	while read -r name a b c d; do
		mean[$name]=$a median[$name]=$b calls[$name]=$c veths[$name]=$d
	done < <(awk -v b="$bench" '
		index($1, b "/") == 1 && $2 ~ /^[0-9]+$/ {
			name = substr($1, length(b) + 2)
			sub(/-[0-9]+$/, "", name)
			delete m
			for (i = 3; i < NF; i += 2) m[$(i + 1)] = $i
			printf "%s %.3f %.3f %.3f %d\n", name, m["ns/op"] / 1e6, m["median-ms"], m["api-calls/scrape"], m["veths"]
		}' "$out")

	setup() { # setup PATTERN: the first log line of the benchmark that matches, without its file:line
		grep -m1 -E "$1" "$out" | sed -E 's/^ *[a-z_]+\.go:[0-9]+: //' || true
	}
	sublog() { # sublog NAME [PATTERN]: the first log line of the sub-benchmark NAME (that matches), without its file:line
		awk -v n="$bench/$1" -v p="${2:-}" '
			$0 == n { f = 1; next }
			f && /^ *[a-z_]+\.go:[0-9]+: / && $0 ~ p { sub(/^ *[a-z_]+\.go:[0-9]+: /, ""); print; exit }
			f && /^(Benchmark|--- |PASS|FAIL)/ { exit }' "$out"
	}
	failure() { # failure NAME: why the sub-benchmark NAME has no result
		local why
		why=$(sublog "$1")
		echo "${why:-the benchmark failed before it ran, see $out}"
	}
	echo
	echo "node: $containers $node"
	local line=setup: p
	for p in "${setups[@]}"; do
		line+=" $(setup "$p");"
	done
	echo "${line%;}"
	echo "warm-up: $(setup 'exporters ready')"
	echo "median and mean of $SCRAPES scrapes (GET /metrics) per subject, after warm-up"
	echo "1-minute load average when measuring started: $load"
	echo
	printf '%-40s %12s %12s %18s %7s\n' subject "median (ms)" "mean (ms)" "$unit calls/scrape" veths
	local -A label=([resolver=off]="resolver off" [resolver=on]="resolver on, steady state"
		["resolver=on,churn"]="resolver on, $churn")
	for name in resolver=off resolver=on resolver=on,churn; do
		if [[ -n ${mean[$name]:-} ]]; then
			printf '%-40s %12.2f %12.2f %18.2f %7d\n' "${label[$name]}" "${median[$name]}" "${mean[$name]}" "${calls[$name]}" "${veths[$name]}"
		else
			printf '%-40s %s\n' "${label[$name]}" "no result: $(failure "$name")"
		fi
	done
	echo "stages of the last scrape (veth_scrape_collector_duration_seconds):"
	for name in resolver=off resolver=on resolver=on,churn; do
		if [[ -n ${mean[$name]:-} ]]; then
			printf '  %-40s %s\n' "${label[$name]}" "$(sublog "$name" '^ *[a-z_]+\.go:[0-9]+: stages ' | sed 's/^stages of the last scrape: //')"
		fi
	done
	if [[ -n ${median[resolver=on]:-} && -n ${median[resolver=off]:-} ]]; then
		awk -v on="${median[resolver=on]}" -v off="${median[resolver=off]}" \
			'BEGIN { printf "resolver cost in steady state: %+.2f ms per scrape (%.2fx), median against median\n", on - off, on / off }'
	fi
	echo

	local what="$unit calls per scrape in steady state O(1) (<= $limit with $containers)"
	if [[ -n ${calls[resolver=on]:-} ]]; then
		if awk -v c="${calls[resolver=on]}" -v l="$limit" 'BEGIN { exit !(c <= l) }'; then
			printf 'PASS  %s: %s\n' "$what" "${calls[resolver=on]}"
		else
			printf 'FAIL  %s: %s\n' "$what" "${calls[resolver=on]}"
		fi
	else
		# The benchmark prints no result line for a sub-benchmark that
		# failed; its message says why (the count itself, if that was it).
		printf 'FAIL  %s: %s\n' "$what" "$(failure resolver=on)"
	fi
	if ((rc != 0)); then
		log "go test failed (exit status $rc)"
		return 3
	fi
}

case ${1:-} in
--docker) DOCKER=1 ;;
--cri) CRI=1 ;;
esac
if [[ ${DOCKER:-0} == 1 ]]; then
	resolver_mode docker
	exit
fi
if [[ ${CRI:-0} == 1 ]]; then
	resolver_mode cri
	exit
fi
for v in VETHS NAMESPACES SCRAPES; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, not '${!v}'"
done
((VETHS >= NAMESPACES)) || die "VETHS ($VETHS) must be at least NAMESPACES ($NAMESPACES)"
((NAMESPACES >= 5)) || die "NAMESPACES must be at least 5 to keep the 80/20 process/mount split"
# Host names are vb<namespace>x<k>; the kernel caps interface names at 15 bytes.
longest="vb$((NAMESPACES - 1))x$(((VETHS + NAMESPACES - 1) / NAMESPACES - 1))"
((${#longest} <= 15)) || die "interface name $longest would be longer than 15 bytes"
((EUID == 0)) || die "must run as root (it creates namespaces)"
for c in unshare nsenter setpriv ip curl awk go; do
	command -v "$c" >/dev/null || die "$c not found"
done
# Resolved now: inside the fixture the working directory is the same, but a
# relative path in an error message would be ambiguous.
if [[ -e $VETH_EXPORTER ]]; then VETH_EXPORTER=$(readlink -f "$VETH_EXPORTER"); fi
export VETHS NAMESPACES SCRAPES VETH_EXPORTER NODE_EXPORTER

work=$(mktemp -d /tmp/veth-bench.XXXXXX)
trap finish EXIT

log "building bench/linkdump"
(cd "$repo" && go build -o "$work/linkdump" ./bench/linkdump) || die "go build ./bench/linkdump failed"

# --kill-child: if this script is killed, the namespace's shell dies too, and
# with it (by their parent-death signal) every process that holds the fixture.
rc=0
unshare -n -m -f --kill-child --propagation private bash "$self" --inner "$work" || rc=$?
exit "$rc"
