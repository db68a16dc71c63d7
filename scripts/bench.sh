#!/bin/sh
# Benchmarks on lab hosts (root; takes over the lab, leaves it down). Prints figures only:
#   engine: connect + facts + no-op apply on 3 and 6 hosts, 200 sequential remote commands over
#           one connection, plan fan-out to 100 hosts;
#   rollout: full rollout of 5 fresh hosts with a warm package cache, the floor it compares to
#           (package installs + initdb + basebackup alone), no-op re-apply.
set -eu
cd "$(dirname "$0")/.."
PGSTRAP_BENCH=1 cargo test --release --quiet --test bench -- --ignored --test-threads=1 --nocapture 2>&1 |
  grep -E '^figure:|panicked|FAILED'
