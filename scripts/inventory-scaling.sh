#!/usr/bin/env bash
# How `pgstrap check` and `pgstrap render` scale with the inventory: generates inventories into a
# temporary directory and prints the wall time of each command (figures, not a timed test).
#
#   scripts/inventory-scaling.sh            # builds and uses the release binary
#   PGSTRAP_BIN=target/debug/pgstrap scripts/inventory-scaling.sh
#   TMPDIR=/dev/shm scripts/inventory-scaling.sh    # render into tmpfs
#
# Render's time includes creating thousands of files: on a disk file system that has just seen many
# files deleted, ext4's inode allocation alone can take seconds (`cp -r` of the same tree does too);
# tmpfs shows pgstrap's own part.
# Shapes: N hosts in N/5 clusters (3 DB hosts with etcd, 2 balancers with a VIP; every fourth
# cluster is a DR standby of the one before it), with and without `networks:` (without, each
# cluster's pg_hba lists its own hosts' /32s and those of hosts in no cluster), up to 3000 hosts,
# and one cluster of 100 DB hosts (the most one cluster may have: every member lists every other,
# so one cluster's work grows with the square of its members; `check` refuses more). Touches no
# host; needs no root.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=${CARGO_TARGET_DIR:-target}
bin=${PGSTRAP_BIN:-$target_dir/release/pgstrap}
if [[ -z ${PGSTRAP_BIN:-} ]]; then
  cargo build --release --quiet
fi
[[ -x $bin ]] || { echo "error: no binary at $bin" >&2; exit 2; }

work=$(mktemp -d -p "${TMPDIR:-/tmp}")
trap 'rm -rf "$work"' EXIT

# many_clusters FILE CLUSTERS NETWORKS(yes|no)
many_clusters() {
  local file=$1 clusters=$2 networks=$3 i a b
  {
    echo "hosts:"
    for ((i = 0; i < clusters; i++)); do
      a=$((10 + i / 250)) b=$((i % 250))
      for h in 1 2 3; do echo "  c$i-db$h: {address: 10.$a.$b.1$h, datacenter: dc$i}"; done
      for h in 1 2; do echo "  c$i-lb$h: {address: 10.$a.$b.2$h, datacenter: dc$i}"; done
    done
    echo "clusters:"
    for ((i = 0; i < clusters; i++)); do
      a=$((10 + i / 250)) b=$((i % 250))
      echo "  c$i:"
      echo "    etcd: [c$i-db1, c$i-db2, c$i-db3]"
      echo "    postgres: [c$i-db1, c$i-db2, c$i-db3]"
      echo "    balancers: [c$i-lb1, c$i-lb2]"
      echo "    vip: 10.$a.$b.100/24"
      if [[ $networks == yes ]]; then echo "    networks: [10.$a.$b.0/24]"; fi
      if ((i % 4 == 3)); then echo "    standby_of: c$((i - 1))"; fi
      echo "    postgres_parameters: {max_connections: $((100 + i % 50))}"
    done
  } >"$file"
}

# one_cluster FILE DB_HOSTS
one_cluster() {
  local file=$1 count=$2 i list=""
  {
    echo "hosts:"
    for ((i = 0; i < count; i++)); do
      echo "  db$i: {address: 10.$((100 + i / 250)).$((i % 250)).11}"
      list+="${list:+, }db$i"
    done
    echo "clusters:"
    echo "  big:"
    echo "    etcd: [db0, db1, db2, db3, db4]"
    echo "    postgres: [$list]"
    echo "    networks: [10.0.0.0/8]"
  } >"$file"
}

# seconds CMD…: "wall s (cpu s)" — CPU time (user + system) too, since wall time on a busy
# machine says more about the machine than about pgstrap.
seconds() {
  local start=$EPOCHREALTIME cpu=""
  if [[ -x /usr/bin/time ]]; then
    /usr/bin/time -f '%U %S' -o "$work/time" "$@" >/dev/null 2>"$work/stderr" ||
      { cat "$work/stderr" >&2; return 1; }
    cpu=$(awk '{ printf " (cpu %.2f s)", $1 + $2 }' "$work/time")
  else
    "$@" >/dev/null 2>"$work/stderr" || { cat "$work/stderr" >&2; return 1; }
  fi
  local end=$EPOCHREALTIME
  awk -v s="$start" -v e="$end" -v c="$cpu" 'BEGIN { printf "%.2f s%s", e - s, c }'
}

run() {
  local what=$1 file=$2
  local check render
  check=$(seconds "$bin" check -i "$file")
  rm -rf "$work/out"
  render=$(seconds "$bin" render -i "$file" --out "$work/out")
  local files bytes
  files=$(find "$work/out" -type f | wc -l)
  bytes=$(find "$work/out" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.1f", s / 1048576 }')
  printf '%-46s check %-22s render %-22s %5d files, %s MiB\n' "$what" "$check" "$render" "$files" "$bytes"
}

echo "binary: $bin"
for clusters in 100 200 600; do
  many_clusters "$work/c$clusters.yaml" "$clusters" yes
  run "$((clusters * 5)) hosts in $clusters clusters, networks given" "$work/c$clusters.yaml"
done
for clusters in 200 600; do
  many_clusters "$work/c$clusters-default.yaml" "$clusters" no
  run "$((clusters * 5)) hosts in $clusters clusters, default networks" "$work/c$clusters-default.yaml"
done
one_cluster "$work/one100.yaml" 100
run "one cluster of 100 DB hosts" "$work/one100.yaml"
