#!/bin/sh
# Engine figures over real SSH (a private sshd on 127.0.0.1-3, started by the test; needs root and
# openssh-server): connect + facts + no-op apply on 3 and 6 hosts, 200 sequential remote commands
# over one connection, plan fan-out to many hosts (PGSTRAP_BENCH_HOSTS, default 30).
# Not a timed test: it prints the figures. Note the remote login shell's start-up is part of every
# command (root's ~/.bashrc on this machine runs `pyenv init`: ~0.3 s per command).
set -eu
cd "$(dirname "$0")/.."
cargo test --release --quiet --test engine bench_engine_figures -- --ignored --nocapture 2>&1 |
  grep -E '^(no-op apply|200 sequential|plan fan-out)|panicked|FAILED'
