#!/usr/bin/env bash
# palmsim sweep over specs/defects.yaml: throughput against the fraction of dead tiles, over a
# range of seeds; SMALL=1 runs its small form (specs/defects-small.yaml).
# Results: ${OUT:-results/sweep_defects}/results.csv and throughput_tokens_per_s_spread.png.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
spec="$here/specs/defects${SMALL:+-small}.yaml"
out=${OUT:-results/sweep_defects}
palmsim sweep "$spec" --out "$out" "$@"
python "$here/plot_spread.py" "$out/results.csv" --x hw.defects.dead_tile_fraction \
    --y throughput_tokens_per_s
python "$here/plot_results.py" "$out/results.csv" --y iteration_time_s
