#!/usr/bin/env bash
# palmsim sweep over specs/pp.yaml; SMALL=1 runs its small form (specs/pp-small.yaml).
# Results: ${OUT:-results/sweep_pp}/results.csv, one row per point. Rerun to resume.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
spec="$here/specs/pp${SMALL:+-small}.yaml"
out=${OUT:-results/sweep_pp}
palmsim sweep "$spec" --out "$out" "$@"
python "$here/plot_results.py" "$out/results.csv" --y iteration_time_s
