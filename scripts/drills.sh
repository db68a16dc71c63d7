#!/bin/sh
# Failure-drill figures (root). Brings up a fresh lab of the given release (5 hosts: 3 DB hosts
# with etcd, 2 balancers: the README's layout; with LAYOUT=dedicated, 8 hosts: etcd on 3 hosts of
# its own, 3 DB hosts, 2 balancers), rolls the stack out, then runs every scenario RUNS times
# under write clients and prints, per scenario, the longest time without an acknowledged write
# (median and range), writes lost and diverged members. Leaves the lab up.
#   scripts/drills.sh [RELEASE] [RUNS] [SCENARIO…]      e.g. scripts/drills.sh 13 3
#   LAYOUT=dedicated scripts/drills.sh 13 1 isolate-primary power-cut-primary
set -eu
cd "$(dirname "$0")/.."
release=${1:-13}
runs=${2:-3}
shift 2 2>/dev/null || shift $#
scenarios=${*:-"kill-patroni kill-postmaster switchover lose-one-etcd lose-etcd-quorum isolate-etcd-leader hang-primary isolate-primary power-cut-primary"}
if [ -z "${PGSTRAP_BIN:-}" ]; then
  cargo build --release --quiet
fi
pgstrap=${PGSTRAP_BIN:-./target/release/pgstrap}
inventory=/var/lib/pgstrap/lab/inventory.yaml
$pgstrap lab down >/dev/null 2>&1 || true
if [ "${LAYOUT:-}" = dedicated ]; then
  $pgstrap lab up --release "$release" --hosts 8 >/dev/null
  lab=$inventory
  inventory=/var/lib/pgstrap/lab/dedicated-drills.yaml
  rm -f /var/lib/pgstrap/lab/dedicated-drills.secrets.yaml
  rm -rf /var/lib/pgstrap/lab/dedicated-drills.tls
  sed '/^clusters:/,$d' "$lab" >"$inventory"
  cat >>"$inventory" <<'YAML'
clusters:
  main:
    etcd: [n1, n2, n3]
    postgres: [n4, n5, n6]
    balancers: [n7, n8]
    vip: 10.77.0.250/24
    networks: [10.77.0.0/24]
YAML
else
  $pgstrap lab up --release "$release" --hosts 5 >/dev/null
fi
$pgstrap apply -i "$inventory" >/dev/null 2>&1
out=$(mktemp -d)
for scenario in $scenarios; do
  i=1
  while [ "$i" -le "$runs" ]; do
    duration=30
    [ "$scenario" = isolate-primary ] && duration=60
    $pgstrap drill "$scenario" -i "$inventory" --duration "$duration" --json \
      >"$out/$scenario.$i.json" 2>"$out/$scenario.$i.log" || true
    i=$((i + 1))
  done
done
python3 - "$out" "$release" "$runs" $scenarios <<'PY'
import json, statistics, sys, os
out, release, runs, scenarios = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
layout = os.environ.get("LAYOUT") or "etcd on the DB hosts"
print(f"figure: drills on Debian {release}, {layout} ({runs} runs each; no writes = longest time without an acknowledged write, reconnecting client)")
for s in scenarios:
    gaps, lost, bad = [], 0, 0
    for i in range(1, runs + 1):
        path = f"{out}/{s}.{i}.json"
        try:
            r = json.load(open(path))
        except Exception:
            bad += 1
            continue
        gaps.append(r["longest_gap_s"])
        lost += sum(c["lost"] for c in r["clients"])
        bad += 0 if not r["problems"] else 1
    if gaps:
        print(f"figure: {s:<20} median {statistics.median(gaps):5.1f} s  range {min(gaps):.1f}-{max(gaps):.1f} s  lost {lost}  failed runs {bad}")
    else:
        print(f"figure: {s:<20} no run completed ({out}/{s}.*.log)")
PY
