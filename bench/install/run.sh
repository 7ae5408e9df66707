#!/usr/bin/env bash
# Installing 3 servers + 50 agents with stand-ins of fixed duration T (default 1s, NIX8S_BENCH_T): the waves against the
# critical path (4 T) and against a sequential run (53 T).
set -euo pipefail
cd "$(dirname "$0")/../.."
NIX8S_BENCH_SEQUENTIAL=1 go test -count=1 -v -run TestCriticalPath ./bench/install/ | grep -E 'took|sequential|ok|FAIL'
