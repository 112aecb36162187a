package main

import (
	"fmt"
	"strings"
)

// The systemd unit and the remediation drop-in the packages install are
// deploy/systemd's, made for a packaged binary the way Debian's
// prometheus-node-exporter is: the binary at /usr/bin, its arguments in
// ARGS of an environment file (/etc/default on Debian, /etc/sysconfig on
// Red Hat's). Everything else of them (capabilities, hardening, comments)
// is the repository's; a test checks that nothing else changed.

// packagedBinary is where the packages install the exporter.
const packagedBinary = "/usr/bin/veth_exporter"

// PackagedUnit turns deploy/systemd/veth_exporter.service into the
// packaged unit, whose arguments come from envFile.
func PackagedUnit(unit, envFile string) (string, error) {
	unit, err := replaceOnce(unit, `# Install: the binary at /usr/local/bin/veth_exporter, this file at
# /etc/systemd/system/veth_exporter.service, then
#   systemctl daemon-reload && systemctl enable --now veth_exporter
# For remediation add remediation.conf as a drop-in (see that file).`, fmt.Sprintf(`# Installed by the veth-exporter package, enabled and started on install;
# the exporter's flags are ARGS in %s. For remediation add
# /usr/share/doc/veth-exporter/examples/remediation.conf as a drop-in (see
# that file).`, envFile))
	if err != nil {
		return "", err
	}
	return replaceExecStart(unit, "", fmt.Sprintf("EnvironmentFile=-%s\nExecStart=%s $ARGS\n", envFile, packagedBinary))
}

// PackagedDropIn turns deploy/systemd/remediation.conf into the packaged
// example: the same flags after ARGS, but for those the packaged unit
// leaves to their defaults or to ARGS (the listen address, the state file).
func PackagedDropIn(dropIn string) (string, error) {
	return replaceExecStart(dropIn, "ExecStart=\n", "", func(flag string) bool {
		return strings.HasPrefix(flag, "--web.listen-address=") || strings.HasPrefix(flag, "--state.path=")
	})
}

// replaceExecStart replaces the ExecStart= line of /usr/local/bin's
// binary, with its continuation lines, after the line before: by repl if
// repl is set, else by the packaged binary with $ARGS and the flags of the
// original that drop does not drop.
func replaceExecStart(file, before, repl string, drop ...func(string) bool) (string, error) {
	start := strings.Index(file, before+"ExecStart=/usr/local/bin/veth_exporter")
	if start < 0 || strings.Count(file, "ExecStart=/usr/local/bin/veth_exporter") != 1 {
		return "", fmt.Errorf("no one ExecStart=/usr/local/bin/veth_exporter")
	}
	start += len(before)
	end := start
	var flags []string
	for {
		nl := strings.IndexByte(file[end:], '\n')
		if nl < 0 {
			return "", fmt.Errorf("ExecStart= does not end")
		}
		line := strings.TrimSpace(strings.TrimSuffix(file[end:end+nl], "\\"))
		if f := strings.Fields(line); len(f) == 1 && strings.HasPrefix(f[0], "--") {
			flags = append(flags, f[0])
		}
		end += nl + 1
		if !strings.HasSuffix(file[end-2:end-1], "\\") {
			break
		}
	}
	if repl == "" {
		kept := []string{packagedBinary + " $ARGS"}
		for _, f := range flags {
			if len(drop) == 0 || !drop[0](f) {
				kept = append(kept, "    "+f)
			}
		}
		repl = "ExecStart=" + strings.Join(kept, " \\\n") + "\n"
	}
	return file[:start] + repl + file[end:], nil
}

func replaceOnce(s, old, repl string) (string, error) {
	if strings.Count(s, old) != 1 {
		return "", fmt.Errorf("%q is not there once", firstLine(old))
	}
	return strings.Replace(s, old, repl, 1), nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
