package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	out := flag.String("out", "../veth-exporter.json", "where to write the dashboard")
	flag.Parse()
	b, err := JSON()
	if err == nil {
		err = os.WriteFile(*out, b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
