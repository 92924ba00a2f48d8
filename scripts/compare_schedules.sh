#!/usr/bin/env bash
# palmsim sweep over specs/schedules.yaml; SMALL=1 runs its small form (specs/schedules-small.yaml).
# Results: ${OUT:-results/compare_schedules}/results.csv, one row per point. Rerun to resume.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
spec="$here/specs/schedules${SMALL:+-small}.yaml"
out=${OUT:-results/compare_schedules}
palmsim sweep "$spec" --out "$out" "$@"
python "$here/plot_results.py" "$out/results.csv" --y iteration_time_s
