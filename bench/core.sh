#!/usr/bin/env bash
# Cost of the pure core at 200, 2,000 and 20,000 members, next to parsing and printing the same config (the
# floor). Each iteration is a whole nix-instantiate process, as the CLI and the daemon run it. Prints, per size,
# validate, plan and check (what nix8sd evaluates per write) as multiples of the floor, and the marginal cost per
# member between the sizes, which stays flat when nothing is quadratic. Target: check within 5x of the floor at
# 20,000 members. NIX8S_BENCH_MEMBERS=200,2000 picks other sizes; BENCHTIME the iterations (default 5x).
set -euo pipefail
cd "$(dirname "$0")/.."
go test -run '^$' -bench 'BenchmarkCore' -benchtime "${BENCHTIME:-5x}" ./tests/ | tee /dev/stderr |
  awk '/^BenchmarkCore/ { k = $1; sub(/^BenchmarkCore\//, "", k); sub(/-[0-9]+$/, "", k); split(k, p, "/members=");
         t[p[1], p[2]] = $3; if (!(p[2] in seen)) { seen[p[2]] = 1; sizes[++n] = p[2] } }
       END {
         for (i = 1; i <= n; i++) {
           s = sizes[i]
           printf "members=%s: check %.1fx parse+print, plan %.1fx, validate %.1fx\n", s,
             t["check", s] / t["parse", s], t["plan", s] / t["parse", s], t["validate", s] / t["parse", s]
         }
         for (i = 2; i <= n; i++) {
           a = sizes[i-1]; b = sizes[i]; d = (b - a) * 1000
           printf "marginal cost per member %s -> %s: parse %.1f us, check %.1f us\n", a, b,
             (t["parse", b] - t["parse", a]) / d, (t["check", b] - t["check", a]) / d
         }
       }'
