#!/usr/bin/env bash
# palmsim sweep over specs/serving-node.yaml (palmsim serve per point); SMALL=1 runs its small
# form (specs/serving-node-small.yaml).
# Results: ${OUT:-results/sweep_serving}/results.csv, one row per point. Rerun to resume.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
spec="$here/specs/serving-node${SMALL:+-small}.yaml"
out=${OUT:-results/sweep_serving}
palmsim sweep "$spec" --out "$out" "$@"
python "$here/plot_results.py" "$out/results.csv" --y ttft_p90_s
