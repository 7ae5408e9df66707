#!/usr/bin/env bash
# Cost of the pure core at 200 and 2,000 members, next to parsing and printing the same config. Each iteration
# is a whole nix-instantiate process, as the CLI and the daemon run it. Prints the ratios and the marginal cost
# per member (the 200 -> 2,000 difference divided by 1,800), which stays flat when nothing is quadratic.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -run '^$' -bench 'BenchmarkCore' -benchtime "${BENCHTIME:-5x}" ./tests/ | tee /dev/stderr |
  awk '/^BenchmarkCore/ { k = $1; sub(/^BenchmarkCore\//, "", k); sub(/-[0-9]+$/, "", k); t[k] = $3 }
       END {
         for (i = 0; i < 2; i++) {
           s = i == 0 ? "members=200" : "members=2000"
           printf "%s: plan %.1fx parse+print, validate %.1fx\n", s, t["plan/" s] / t["parse/" s], t["validate/" s] / t["parse/" s]
         }
         printf "marginal cost per member: parse %.1f us, validate %.1f us, plan %.1f us\n",
           (t["parse/members=2000"] - t["parse/members=200"]) / 1800000,
           (t["validate/members=2000"] - t["validate/members=200"]) / 1800000,
           (t["plan/members=2000"] - t["plan/members=200"]) / 1800000
       }'
