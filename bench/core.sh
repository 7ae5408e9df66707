#!/usr/bin/env bash
# Cost of the pure core at 200, 2,000 and 20,000 members, next to parsing and printing the same config (the
# floor). Each run is a whole nix-instantiate process, as the CLI and the daemon run it; an iteration runs parse,
# validate, plan and check (what nix8sd evaluates per write) one after the other, so the machine's other load
# falls on all alike, and each counts by its fastest run. Prints, per size, each as a multiple of the floor with
# Nix's counters (function calls and thunks per member, MB allocated: these do not vary between runs), and the
# marginal cost per member between the sizes, which stays flat when nothing is quadratic. Target: check within 5x
# of the floor at 20,000 members (aim: 4x). NIX8S_BENCH_MEMBERS=2000,20000 picks other sizes; BENCHTIME the
# iterations (default 5x).
set -euo pipefail
cd "$(dirname "$0")/.."
go test -run '^$' -bench 'BenchmarkCore' -benchtime "${BENCHTIME:-5x}" ./tests/ | tee /dev/stderr |
  awk '/^BenchmarkCore\/members=/ { s = $1; sub(/^BenchmarkCore\/members=/, "", s); sub(/-[0-9]+$/, "", s); sizes[++n] = s
         for (i = 3; i < NF; i++) m[s, $(i + 1)] = $i }
       END {
         for (i = 1; i <= n; i++) {
           s = sizes[i]
           printf "members=%s (fastest of the runs):\n", s
           split("parse validate plan check", names, " ")
           for (j = 1; j <= 4; j++) {
             e = names[j]
             printf "  %-8s %8.1f ms  %4.1fx parse+print  %6.1f calls/member  %6.1f thunks/member  %6.1f MB allocated\n", e,
               m[s, e "-ms"], m[s, e "-ms"] / m[s, "parse-ms"], m[s, e "-calls/member"], m[s, e "-thunks/member"], m[s, e "-MB"]
           }
         }
         for (i = 2; i <= n; i++) {
           a = sizes[i-1]; b = sizes[i]; d = (b - a) / 1000
           printf "marginal cost per member %s -> %s: parse %.1f us, check %.1f us\n", a, b,
             (m[b, "parse-ms"] - m[a, "parse-ms"]) / d, (m[b, "check-ms"] - m[a, "check-ms"]) / d
         }
       }'
