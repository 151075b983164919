#!/usr/bin/env bash
# The Fashion-MNIST study (README.md beside this file): every row of rows.txt, each a preset as shipped (ResNet-18,
# batch 256, 10 epochs over the 60k training images, seed 0), the same evaluation on the 10k test
# images with low-shot linear probes (1 % and 10 % of the training labels), one row after another.
#   bash experiments/fashion_mnist/run_study.sh [--rows a,b,...] [out_dir] [extra overrides for every row...]
# --rows runs only the named rows of rows.txt (in rows.txt's order); a name not in rows.txt stops
# the study before anything runs.
# out_dir defaults to $SSLKIT_STUDY_DIR, else ~/sslkit_runs/fashion_mnist_study: outside the checkout,
# so that a fresh clone or `git clean` does not lose hours of finished rows.
# A row whose results.json exists is skipped, so an interrupted study continues where it stopped
# (a row cut short restarts from its last checkpoint: resume=true). Extra overrides shrink it for a
# smoke run, e.g. `data.max_train=2048 data.max_test=1024 trainer.max_epochs=1`.
# Times only mean something when nothing else runs on the machine; `touch <out_dir>/PAUSE` holds the
# study before its next row until the file is removed.
set -euo pipefail
rows_file="$(dirname "$0")/rows.txt"
only=""
if [[ ${1:-} == --rows ]]; then
  only=",${2:?--rows needs a comma-separated list of row names},"
  shift 2
  for want in ${only//,/ }; do
    if ! grep -Eq "^$want[[:space:]]*\|" "$rows_file"; then
      echo "run_study.sh: no row '$want' in $rows_file" >&2
      exit 2
    fi
  done
fi
out=${1:-${SSLKIT_STUDY_DIR:-$HOME/sslkit_runs/fashion_mnist_study}}
shift || true
failed=()  # a failed row does not stop the others; the study exits non-zero at the end
evaluation=(seed=0 logger=none eval.plots=false "eval.linear.label_fractions=[0.01,0.1,1.0]")
common=("${evaluation[@]}" "$@")

due() {  # whether row $1 still has to run; waits while the study is paused
  if [[ -f $out/$1/results.json ]]; then echo "skip $1 (done)"; return 1; fi
  while [[ -e $out/PAUSE ]]; do sleep 15; done
  echo "== $1: $(date -u +%FT%TZ)"
}
run_row() {  # run_row <name> <overrides...> | run_row <name> eval <row> <overrides...>
  local name=$1; shift
  due "$name" || return 0
  if [[ ${1:-} == eval ]]; then
    local row=$2; shift 2
    sslkit-eval "ckpt_path=$out/$row/checkpoints/last.ckpt" "$@" "${evaluation[@]}" \
      "hydra.run.dir=$out/$name" </dev/null || failed+=("$name")
  else
    sslkit-train "$@" "${common[@]}" "hydra.run.dir=$out/$name" </dev/null || failed+=("$name")
  fi
}

# The rows, in order: rows.txt beside this script (table.py prints the same list).
while IFS='|' read -r name _label how; do
  name=${name// /}
  [[ -z $name || $name == \#* ]] && continue
  [[ -n $only && $only != *",$name,"* ]] && continue
  read -r -a overrides <<<"$how"
  run_row "$name" "${overrides[@]}"
done <"$rows_file"
if ((${#failed[@]})); then echo "failed rows: ${failed[*]}" >&2; exit 1; fi
