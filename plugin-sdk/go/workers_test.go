package baton

import "testing"

func TestWorkerCountFollowsTheEnvironmentThenTheCode(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		coded   int
		want    int
		keep    bool
		warning bool
	}{
		{name: "the default is one thread", want: 1},
		{name: "the code asks for four", coded: 4, want: 4},
		{name: "the operator wins over the code", env: map[string]string{EnvWorkers: "2"}, coded: 4, want: 2},
		{name: "spaces around a count", env: map[string]string{EnvWorkers: " 3 "}, want: 3},
		{name: "GOMAXPROCS set by the operator is kept", env: map[string]string{"GOMAXPROCS": "2"}, coded: 4, keep: true},
		{name: "BATON_PLUGIN_WORKERS wins over GOMAXPROCS", env: map[string]string{EnvWorkers: "1", "GOMAXPROCS": "2"}, want: 1},
		{name: "not a number", env: map[string]string{EnvWorkers: "lots"}, want: 1, warning: true},
		{name: "zero", env: map[string]string{EnvWorkers: "0"}, coded: 2, want: 2, warning: true},
		{name: "a typo too large", env: map[string]string{EnvWorkers: "40000"}, want: 1, warning: true},
		{name: "the code's count is bounded too", coded: 5000, want: maxWorkers},
	} {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			n, keep, warning := workerCount(getenv, tc.coded)
			if keep != tc.keep || (!keep && n != tc.want) {
				t.Fatalf("workerCount = %d, keep %v; want %d, keep %v", n, keep, tc.want, tc.keep)
			}
			if (warning != "") != tc.warning {
				t.Fatalf("warning %q; want one: %v", warning, tc.warning)
			}
		})
	}
}
