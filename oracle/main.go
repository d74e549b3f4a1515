// Command istio-oracle runs istiod's own config generation (pilot, in process, as
// Istio's tests do: pilot/test/xds.NewFakeDiscoveryServer) for a set of fixtures and
// prints, as JSON, what that istiod would send each gateway pod and where requests
// sent to those pods would go.
//
// Usage: istio-oracle [-istio-version 1.30.3] INPUT.json   (or - for stdin)
//
// Pilot's feature flags are read from the environment at start, as istiod reads them
// (e.g. PILOT_ENABLE_METADATA_EXCHANGE=false, PILOT_ENABLE_ALPN_FILTER=false).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"istio.io/istio/pilot/pkg/features"
	istiolog "istio.io/istio/pkg/log"
)

// proxyVersion is the Istio release this build stands for (set by scripts/istio-oracle.sh).
var proxyVersion = "1.30.3"

func main() {
	version := flag.String("istio-version", proxyVersion, "Istio release the proxies report (ISTIO_VERSION metadata)")
	noTelemetry := flag.Bool("no-telemetry", false, "mesh config without default metrics providers (no istio.stats filter)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: istio-oracle [-istio-version V] [-no-telemetry] INPUT.json|-")
		os.Exit(2)
	}
	quietIstioLogs()
	in, err := readInput(flag.Arg(0))
	if err != nil {
		fmt.Fprintf(os.Stderr, "istio-oracle: %v\n", err)
		os.Exit(2)
	}
	out, err := run(in, *version, *noTelemetry)
	if err != nil {
		fmt.Fprintf(os.Stderr, "istio-oracle: %v\n", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintf(os.Stderr, "istio-oracle: writing output: %v\n", err)
		os.Exit(1)
	}
}

func readInput(path string) (*Input, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	var in Input
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return nil, fmt.Errorf("reading input %s: %v", path, err)
	}
	return &in, nil
}

// quietIstioLogs keeps pilot's logging off stdout (the JSON answer goes there).
func quietIstioLogs() {
	o := istiolog.DefaultOptions()
	o.OutputPaths = []string{"stderr"}
	o.ErrorOutputPaths = []string{"stderr"}
	o.SetDefaultOutputLevel("all", istiolog.ErrorLevel)
	_ = istiolog.Configure(o)
}

func buildInfo() Build {
	b := Build{Release: proxyVersion, Module: "unknown", Features: map[string]any{
		"PILOT_ENABLE_METADATA_EXCHANGE": features.MetadataExchange,
		"PILOT_ENABLE_ALPN_FILTER":       features.ALPNFilter,
	}}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			if d.Path == "istio.io/istio" {
				b.Module = "istio.io/istio@" + d.Version
			}
		}
	}
	return b
}
