#!/usr/bin/env bash
# Deploy kaon once per variant, send each the same seeded `kaon bench` workload, and print
# one table with every variant's figures and its ratios to the first variant.
#
#   scripts/compare-deployments.sh OUT_DIR CONFIG 'LABEL=SERVE FLAGS' ... -- BENCH FLAGS
#
# e.g. scripts/compare-deployments.sh results/routing configs/bench-cpu.yaml \
#        'round_robin=--router-policy round_robin' 'prefix_load=--router-policy prefix_load' \
#        -- --workload shared-prefix --num-groups 4 --rate 0.2 --num-requests 32
# Each variant gets a fresh local Ray (`kaon serve --detach` … `kaon shutdown`), so run it
# where no other Ray is running. Engine stats come from the replicas (`--kaon-address auto`).
set -euo pipefail
out=$1 config=$2
shift 2
variants=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do variants+=("$1"); shift; done
[ $# -gt 0 ] && shift
[ ${#variants[@]} -gt 0 ] || { echo "usage: $0 OUT_DIR CONFIG 'LABEL=SERVE FLAGS' ... -- BENCH FLAGS" >&2; exit 2; }
mkdir -p "$out"
results=()
for variant in "${variants[@]}"; do
  label=${variant%%=*}
  read -r -a flags <<< "${variant#*=}"
  echo "=== $label: kaon serve ${flags[*]}"
  kaon serve --config "$config" --detach "${flags[@]}"
  kaon bench --label "$label" --out "$out/$label" --kaon-address auto --no-progress "$@" || true
  kaon shutdown
  results+=("$out/$label"/*.json)
done
echo "=== compared with ${variants[0]%%=*}"
kaon bench --compare "${results[@]}" --out "$out"
