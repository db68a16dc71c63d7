#!/usr/bin/env bash
# The test command (README): installs what the tests need when missing, then runs
#   1. formatting and lints,
#   2. unit, snapshot and CLI tests, and the real programs' config checks,
#   3. end-to-end tests on lab hosts (real systemd hosts over real SSH; needs root).
# `tests/run.sh --quick` stops after step 2.
# Every test runs or fails: the config checks fail when their program is missing
# (PGSTRAP_REQUIRE_ALL=1), and the end-to-end tests (`#[ignore]`d in a plain `cargo test`) run with
# `--ignored`; under CI (`CI` set) not being root to run them is a failure too.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[[ "${1:-}" == "--quick" ]] && quick=1

# Packages: the config checks run the real programs; the TLS test uses curl, openssl and psql.
packages=(haproxy keepalived psmisc patroni python3-etcd pgbouncer pgbackrest
  etcd-server etcd-client postgresql postgresql-common openssh-server curl openssl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "tests/run.sh: installing ${missing[*]}" >&2
  if [[ $EUID -ne 0 ]]; then
    echo "error: installing packages needs root (or install them yourself: apt-get install ${missing[*]})" >&2
    exit 2
  fi
  # No service may start on this machine while installing (haproxy, etcd, pgbouncer…): a
  # temporary policy-rc.d, removed afterwards, and only if none existed.
  policy_created=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    policy_created=1
  fi
  # And no default main cluster (the config checks need only PostgreSQL's binaries).
  createcluster=/etc/postgresql-common/createcluster.d/00-pgstrap-tests.conf
  createcluster_created=0
  if [[ ! -e $createcluster ]]; then
    mkdir -p "$(dirname "$createcluster")"
    echo "create_main_cluster = false" >"$createcluster"
    createcluster_created=1
  fi
  cleanup() {
    [[ $policy_created == 1 ]] && rm -f /usr/sbin/policy-rc.d
    [[ $createcluster_created == 1 ]] && rm -f "$createcluster"
    return 0
  }
  trap cleanup EXIT
  apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  cleanup
  policy_created=0
  createcluster_created=0
fi

export CARGO_TERM_COLOR=never
export PGSTRAP_REQUIRE_ALL=1
# Each step's wall time is kept for the table at the end.
steps=()
step() {
  local start=$SECONDS
  "$@"
  steps+=("$((SECONDS - start)) $*")
}
step cargo fmt --check
step cargo clippy --all-targets --quiet -- -D warnings
step cargo build --quiet
unit_tests() { cargo test --quiet 2>&1 | tee /tmp/pgstrap-test.log; }
step unit_tests
print_steps() {
  local row
  echo "time per step (s):"
  for row in "${steps[@]}"; do printf '  %5d  %s\n' "${row%% *}" "${row#* }"; done
}

if ((quick)); then
  print_steps
  exit 0
fi
if [[ $EUID -ne 0 ]]; then
  if [[ -n "${CI:-}" && "${CI}" != false && "${CI}" != 0 ]]; then
    echo "error: the end-to-end tests need root (lab hosts); under CI every test must run" >&2
    exit 1
  fi
  echo "skipping the end-to-end tests: they need root (lab hosts)" >&2
  exit 0
fi
# End to end: lab hosts. One test at a time (they share the lab), one file after the other in this
# order, each test in its own run. They are `#[ignore]`d in a plain `cargo test`: `--ignored` runs exactly them; the
# benchmarks among them (bench_*) stay for scripts/bench*.sh.
# Whatever happens, leave no lab behind (the Debian base stays cached).
trap './target/debug/pgstrap lab down >/dev/null 2>&1 || true' EXIT
# Each file's whole output goes to /tmp/pgstrap-e2e-FILE.log; shown here: the figures the tests
# measured (`figure:` lines, which a captured test never shows) and the results, or on a failure
# the end of the log. Each drill also keeps every host's journals of the stack's services in
# /tmp/pgstrap-e2e-journals/debian-RELEASE-SCENARIO/HOST.log (a figure can be explained later).
rm -rf /tmp/pgstrap-e2e-journals
# The preinstalled image the e2e tests that are not about installing start from (`lab up
# --preinstalled`): built once per release and cached like the Debian base; its own step here so
# its cost shows (a few seconds when cached, about a minute when the roles' packages changed).
step ./target/debug/pgstrap lab image --release 13
# The budget: every e2e test runs on its own (in its file's order) and its wall time is kept;
# the table at the end shows each test, each file and the sum.
times=()
e2e_start=$SECONDS
print_times() {
  ((${#times[@]})) || return 0
  echo "e2e time per test (s):"
  local total=0 file_total=0 file="" row f t s
  for row in "${times[@]}"; do
    read -r f t s <<<"$row"
    if [[ -n $file && $f != "$file" ]]; then
      printf '  %5d  tests/%s.rs (file)\n' "$file_total" "$file"
      file_total=0
    fi
    file=$f
    printf '  %5d  %s::%s\n' "$s" "$f" "$t"
    ((file_total += s, total += s)) || true
  done
  printf '  %5d  tests/%s.rs (file)\n' "$file_total" "$file"
  printf '  %5d  every e2e test (%d tests; wall %d s)\n' "$total" "${#times[@]}" $((SECONDS - e2e_start))
}
for t in lab engine rollout tls safety ops drill members dr backup; do
  [[ -f "tests/$t.rs" ]] || continue
  log=/tmp/pgstrap-e2e-$t.log
  : >"$log"
  echo "e2e: tests/$t.rs (log: $log)"
  # In the order they are written in the file (tests that share a cluster rely on it; see
  # tests/common/mod.rs `take`), not libtest's alphabetical one.
  mapfile -t names < <(cargo test --quiet --test "$t" -- --ignored --list 2>/dev/null |
    sed -n 's/: test$//p' | grep -v '^bench_' | while read -r name; do
      echo "$(grep -n -m1 -E "^fn $name\(" "tests/$t.rs" | cut -d: -f1) $name"
    done | sort -n | cut -d' ' -f2)
  for name in "${names[@]}"; do
    start=$SECONDS
    if PGSTRAP_E2E=1 cargo test --quiet --test "$t" -- --ignored --exact "$name" --test-threads=1 \
      --nocapture >>"$log" 2>&1; then
      times+=("$t $name $((SECONDS - start))")
      echo "  ok  $name ($((SECONDS - start)) s)"
    else
      times+=("$t $name $((SECONDS - start))")
      tail -n 150 "$log"
      echo "error: $t::$name failed (whole output: $log)" >&2
      print_steps
      print_times
      exit 1
    fi
  done
  grep -E '^figure:' "$log" || true
done
print_steps
print_times
echo "tests/run.sh: $SECONDS s in all"
