#!/bin/sh
# Backup figures on lab hosts (root; takes over the lab, leaves it down). Prints figures only: a
# pgbench database of scale 50 (PGSTRAP_BENCH_SCALE), its full backup (time, size in the
# repository), the WAL archive's throughput under pgbench, an incremental backup, and a restore of
# it all into another cluster (RTO per GB).
set -eu
cd "$(dirname "$0")/.."
PGSTRAP_BENCH=1 PGSTRAP_E2E=1 cargo test --release --quiet --test backup bench_backup_and_restore -- --ignored --exact --nocapture 2>&1 |
  grep -E '^figure:|panicked|FAILED'
