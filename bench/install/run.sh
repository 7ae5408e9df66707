#!/usr/bin/env bash
# Installing 3 servers + 50 agents with stand-ins of fixed duration T (default 500ms, NIX8S_BENCH_T): the waves
# against the critical path (4 T) and a sequential run (53 T), as x-critical-path.
set -euo pipefail
cd "$(dirname "$0")/../.."
go test -count=1 -run '^$' -bench 'BenchmarkInstall' -benchtime 1x ./bench/install/
