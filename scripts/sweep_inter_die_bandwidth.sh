#!/usr/bin/env bash
# palmsim sweep over specs/inter-die-bandwidth.yaml; SMALL=1 runs its small form (specs/inter-die-bandwidth-small.yaml).
# Results: ${OUT:-results/sweep_inter_die_bandwidth}/results.csv, one row per point. Rerun to resume.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
spec="$here/specs/inter-die-bandwidth${SMALL:+-small}.yaml"
out=${OUT:-results/sweep_inter_die_bandwidth}
palmsim sweep "$spec" --out "$out" "$@"
python "$here/plot_results.py" "$out/results.csv" --y iteration_time_s
