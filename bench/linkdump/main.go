// Command linkdump is the baseline of bench/compare.sh: the cost of one bare
// netlink link dump as a tool listing links with vishvananda/netlink pays it,
// netlink.LinkList() (RTM_GETLINK with statistics, every attribute decoded).
// It has no HTTP server and no exposition format on purpose. veth_exporter's
// own dump asks the kernel for less (no statistics) and decodes less, so it
// costs less than this baseline; `make bench` reports both side by side.
//
// It dumps the links of the network namespace it runs in, -n times after one
// warm-up, and prints one line of key=value pairs on stdout: the number of
// links and veths seen, the median, minimum and maximum dump duration and its
// own peak resident set size (VmHWM).
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
)

// dumpAttempts bounds the retries of an interrupted dump. The kernel flags a
// dump whose link table changed under it; on a node where containers come and
// go that is routine, and an exporter retries it the same way.
const dumpAttempts = 5

func main() {
	n := flag.Int("n", 20, "number of timed dumps after the warm-up")
	flag.Parse()
	if *n < 1 {
		fmt.Fprintln(os.Stderr, "linkdump: -n must be at least 1")
		os.Exit(2)
	}

	// The warm-up keeps one-time costs (page faults of the first large
	// receive buffers, lazy init in the netlink package) out of the median,
	// as the curl warm-up does for the exporters.
	links, err := dumpLinks()
	if err != nil {
		fmt.Fprintf(os.Stderr, "linkdump: %v\n", err)
		os.Exit(1)
	}

	durations := make([]time.Duration, 0, *n)
	for range *n {
		start := time.Now()
		links, err = dumpLinks()
		durations = append(durations, time.Since(start))
		if err != nil {
			fmt.Fprintf(os.Stderr, "linkdump: %v\n", err)
			os.Exit(1)
		}
	}
	slices.Sort(durations)

	veths := 0
	for _, l := range links {
		if l.Type() == "veth" {
			veths++
		}
	}

	hwm, err := peakRSSKiB()
	if err != nil {
		fmt.Fprintf(os.Stderr, "linkdump: %v\n", err)
		os.Exit(1)
	}

	fmt.Printf("links=%d veths=%d median_ms=%.3f min_ms=%.3f max_ms=%.3f vmhwm_kb=%d\n",
		len(links), veths, ms(median(durations)), ms(durations[0]), ms(durations[len(durations)-1]), hwm)
}

// dumpLinks returns one complete link dump, retrying when the kernel reports
// that the dump was interrupted by a concurrent change.
func dumpLinks() ([]netlink.Link, error) {
	var err error
	for range dumpAttempts {
		var links []netlink.Link
		links, err = netlink.LinkList()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			if err != nil {
				return nil, fmt.Errorf("link dump: %w", err)
			}
			return links, nil
		}
	}
	return nil, fmt.Errorf("link dump interrupted %d times in a row: %w", dumpAttempts, err)
}

// median expects sorted durations.
func median(d []time.Duration) time.Duration {
	m := len(d) / 2
	if len(d)%2 == 1 {
		return d[m]
	}
	return (d[m-1] + d[m]) / 2
}

func ms(d time.Duration) float64 {
	return float64(d) / float64(time.Millisecond)
}

// peakRSSKiB reads VmHWM, the same figure the script reads from
// /proc/PID/status for the exporters, so the three RSS columns compare like
// with like.
func peakRSSKiB() (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		value, ok := strings.CutPrefix(s.Text(), "VmHWM:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse VmHWM %q: %w", value, err)
		}
		return kb, nil
	}
	if err := s.Err(); err != nil {
		return 0, fmt.Errorf("read /proc/self/status: %w", err)
	}
	return 0, errors.New("no VmHWM in /proc/self/status")
}
