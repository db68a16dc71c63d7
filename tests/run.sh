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
# python3 reads cargo's JSON for the test binaries (below); tar unpacks the report bundle.
packages=(haproxy keepalived psmisc patroni python3-etcd pgbouncer pgbackrest
  etcd-server etcd-client postgresql postgresql-common openssh-server curl openssl python3 tar)
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
# End to end: lab hosts, in two rows that run side by side, each on a lab of its own (slot 0 in
# the default directory, slot 1 in /var/lib/pgstrap/lab-1: own networks, own kernel names; see
# `pgstrap lab up --slot`). Most of an e2e test's time is waiting (for Patroni's ttl, a fault's
# hold, a gate): two rows use the machine's two cores where one row left them idle. In a row,
# one test at a time, file after file, each test in its own run, in the order written in its
# file. They are `#[ignore]`d in a plain `cargo test`: `--ignored` runs exactly them; the
# benchmarks among them (bench_*) stay for scripts/bench*.sh. A row entry `FILE:WORDS` takes
# only the tests of FILE whose name contains WORDS.
# The two rows' installs from the bare base (rollout_end_to_end early in row 0, the Debian 12
# drill's rollout) are CPU-bound in dpkg: row 1 reaches its own when row 0 is in its drills, which
# mostly wait.
rows=(
  "lab engine rollout tls safety ops drill:debian_13"
  "dr members drill:debian_12 backup"
)
row_dirs=(/var/lib/pgstrap/lab /var/lib/pgstrap/lab-1)
# Whatever happens, leave no lab behind (the Debian base stays cached).
labs_down() {
  local row
  for row in "${!row_dirs[@]}"; do
    PGSTRAP_LAB_SLOT=$row PGSTRAP_LAB_DIR=${row_dirs[$row]} ./target/debug/pgstrap lab down \
      >/dev/null 2>&1 || true
  done
}
trap labs_down EXIT
# Each entry's whole output goes to /tmp/pgstrap-e2e-ENTRY.log; shown at the end: the figures
# the tests measured (`figure:` lines, which a captured test never shows) and the results, or
# on a failure the end of the log. Each drill also keeps every host's journals of the stack's
# services in /tmp/pgstrap-e2e-journals/debian-RELEASE-SCENARIO/HOST.log (a figure can be
# explained later).
rm -rf /tmp/pgstrap-e2e-journals /tmp/pgstrap-e2e-rows
mkdir -p /tmp/pgstrap-e2e-rows
# The preinstalled image the e2e tests that are not about installing start from (`lab up
# --preinstalled`): built once per release and cached like the Debian base; its own step here so
# its cost shows (a few seconds when cached, about a minute when the roles' packages changed).
step ./target/debug/pgstrap lab image --release 13
# The test binaries, run directly (two rows never wait on cargo's build lock).
declare -A binaries
while read -r name path; do binaries[$name]=$path; done < <(
  cargo test --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])'
)
log_of() { echo "/tmp/pgstrap-e2e-${1/:/-}.log"; }
# One row: its entries' tests one after the other; each test's time goes to ROWDIR/times
# ("entry test seconds"); a failure stops the row and is written to ROWDIR/failed.
run_row() {
  local row=$1 entries=$2 out=/tmp/pgstrap-e2e-rows/$1 entry file words log bin start name
  mkdir -p "$out"
  export PGSTRAP_LAB_SLOT=$row PGSTRAP_LAB_DIR=${row_dirs[$row]}
  for entry in $entries; do
    file=${entry%%:*}
    words=""
    [[ $entry == *:* ]] && words=${entry#*:}
    [[ -f "tests/$file.rs" ]] || continue
    log=$(log_of "$entry")
    : >"$log"
    bin=${binaries[$file]:-}
    echo "e2e row $row: tests/$file.rs${words:+ (tests named *$words*)} (log: $log)"
    if [[ -z $bin ]]; then
      echo "no test binary for tests/$file.rs" >"$log"
      echo "$entry (no test binary)" >"$out/failed"
      echo "  FAILED  row $row: no test binary for tests/$file.rs"
      return 1
    fi
    # In the order they are written in the file (tests that share a cluster rely on it; see
    # tests/common/mod.rs `take`), not libtest's alphabetical one.
    mapfile -t names < <("$bin" --ignored --list 2>/dev/null |
      sed -n 's/: test$//p' | grep -v '^bench_' | grep -F -- "$words" | while read -r name; do
        echo "$(grep -n -m1 -E "^fn $name\(" "tests/$file.rs" | cut -d: -f1) $name"
      done | sort -n | cut -d' ' -f2)
    # An entry that selects no test is a mistake in the rows, never a pass.
    if ((${#names[@]} == 0)); then
      echo "no e2e test in tests/$file.rs matches '$words'" >>"$log"
      echo "$entry (no test selected)" >"$out/failed"
      echo "  FAILED  row $row: no e2e test of tests/$file.rs selected"
      return 1
    fi
    for name in "${names[@]}"; do
      start=$SECONDS
      if PGSTRAP_E2E=1 "$bin" --ignored --exact "$name" --test-threads=1 --nocapture \
        >>"$log" 2>&1; then
        echo "$entry $name $((SECONDS - start))" >>"$out/times"
        echo "  ok  row $row: $file::$name ($((SECONDS - start)) s)"
      else
        echo "$entry $name $((SECONDS - start))" >>"$out/times"
        echo "$entry $name" >"$out/failed"
        echo "  FAILED  row $row: $file::$name ($((SECONDS - start)) s; log: $log)"
        return 1
      fi
    done
  done
}
e2e_start=$SECONDS
pids=()
for row in "${!rows[@]}"; do
  run_row "$row" "${rows[$row]}" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || true; done
e2e_wall=$((SECONDS - e2e_start))
# The budget: every e2e test's wall time, per entry and per row; the rows ran side by side.
print_times() {
  echo "e2e time per test (s), rows side by side:"
  local total=0 row times entry_total entry="" row_total e t s
  for row in "${!rows[@]}"; do
    times=/tmp/pgstrap-e2e-rows/$row/times
    [[ -f $times ]] || continue
    row_total=0 entry_total=0 entry=""
    while read -r e t s; do
      if [[ -n $entry && $e != "$entry" ]]; then
        printf '  %5d  %s (entry)\n' "$entry_total" "$entry"
        entry_total=0
      fi
      entry=$e
      printf '  %5d  %s::%s\n' "$s" "${e%%:*}" "$t"
      ((entry_total += s, row_total += s, total += s)) || true
    done <"$times"
    [[ -n $entry ]] && printf '  %5d  %s (entry)\n' "$entry_total" "$entry"
    printf '  %5d  row %d (slot %d): %s\n' "$row_total" "$row" "$row" "${rows[$row]}"
  done
  printf '  %5d  every e2e test; wall %d s with the rows side by side\n' "$total" "$e2e_wall"
}
failed=0
for row in "${!rows[@]}"; do
  for entry in ${rows[$row]}; do
    log=$(log_of "$entry")
    [[ -f $log ]] && grep -E '^figure:' "$log" || true
  done
  if [[ -f /tmp/pgstrap-e2e-rows/$row/failed ]]; then
    read -r entry name <"/tmp/pgstrap-e2e-rows/$row/failed"
    log=$(log_of "$entry")
    tail -n 150 "$log"
    echo "error: ${entry%%:*}::$name failed (row $row; whole output: $log)" >&2
    failed=1
  fi
done
print_steps
print_times
echo "tests/run.sh: $SECONDS s in all"
exit "$failed"
