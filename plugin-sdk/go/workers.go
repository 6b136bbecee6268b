package baton

import (
	"fmt"
	"strconv"
	"strings"
)

// EnvWorkers sets how many threads run the plugin's Go code at once (GOMAXPROCS),
// over [WithWorkers]: an operator sets it in the plugin's env in the host's config,
// without rebuilding. The Rust SDK reads the same variable for its thread count.
const EnvWorkers = "BATON_PLUGIN_WORKERS"

// maxWorkers bounds EnvWorkers: a typo such as 40000 is refused, not obeyed.
const maxWorkers = 1024

// WithWorkers lets [Serve] run the plugin's Go code on n threads at once instead of
// the default one. Goroutines run concurrently either way; one thread serves a call
// without handing it between threads, which on a 2-vCPU machine took a call from
// 65–78 µs to 26 µs. Ask for more when handlers are CPU-heavy, so that one long
// computation does not slow every other call. [EnvWorkers] overrides it, and so does
// GOMAXPROCS set in the environment. [Run] leaves the process's setting alone.
func WithWorkers(n int) Option {
	return func(o *options) { o.workers = n }
}

// workerCount is what Serve sets GOMAXPROCS to: EnvWorkers when it holds a count from 1
// to maxWorkers, else nothing (keep is true) when GOMAXPROCS is in the environment,
// else the code's WithWorkers, else 1. warning is set when EnvWorkers was refused.
func workerCount(getenv func(string) (string, bool), coded int) (n int, keep bool, warning string) {
	if value, ok := getenv(EnvWorkers); ok {
		count, err := strconv.Atoi(strings.TrimSpace(value))
		if err == nil && count >= 1 && count <= maxWorkers {
			return count, false, ""
		}
		warning = fmt.Sprintf("%s=%q is not a worker count from 1 to %d; ignored", EnvWorkers, value, maxWorkers)
	}
	if _, ok := getenv("GOMAXPROCS"); ok {
		return 0, true, warning
	}
	if coded >= 1 {
		return min(coded, maxWorkers), false, warning
	}
	return 1, false, warning
}
