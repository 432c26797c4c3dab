#!/usr/bin/env bash
# Train several demo-model recipes side by side on one GPU (the device tool's machine) and keep each
# one's final weights and training log under $OUT/<variant>/. Usage: OUT=dir bash tools/gpu_demo_sweep.sh
# A recipe is "PX|STAGE1_ARGS|STAGE2_ARGS": digit size in px, then one or two training stages. The
# recipes below are the last of three sweeps; every variant and its result is in assets/demo/recipe_sweep.json.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
python3 -c "import torch, open_clip; print(torch.__version__, open_clip.__version__, torch.cuda.get_device_name())"
declare -A RECIPES=(
  [Q1]="22|--steps 2400 --solo digit=0.2 position=0.1 shape=0.1 --emphasis shape=0.8|"
  [Q2]="22|--steps 2400 --solo digit=0.25 --emphasis shape=0.8 position=0.8|"
  [Q3]="22|--steps 2400 --solo digit=0.3|"
  [Q4]="20|--steps 2400 --solo digit=0.25 shape=0.1 position=0.05 colour=0.05 size=0.05 count=0.05 texture=0.05 --emphasis shape=0.8|"
)
train() {  # PX ARGS...: the training CLI with the world's digit size set first
  python3 -c "import sys, residual_core.data.world as w; w.DIGIT_PX = int(sys.argv[1]); sys.argv[1:2] = []
from residual_core.demo.train import main; main()" "$@" --workers 4
}
run_recipe() {
  local v=$1 px s1 s2; IFS='|' read -r px s1 s2 <<< "$2"
  mkdir -p "$OUT/$v"
  if [ -z "$s2" ]; then train "$px" $s1 --out "$OUT/$v/residual-demo.safetensors"; return; fi
  train "$px" $s1 --out "$OUT/$v/stage1.safetensors" &&
    train "$px" $s2 --init "$OUT/$v/stage1.safetensors" --out "$OUT/$v/residual-demo.safetensors"
  rm -f "$OUT/$v/stage1.safetensors"*
}
for v in "${!RECIPES[@]}"; do run_recipe "$v" "${RECIPES[$v]}" > "/tmp/train_$v.log" 2>&1 & done
wait
for v in $(echo "${!RECIPES[@]}" | tr ' ' '\n' | sort); do
  echo "== $v: ${RECIPES[$v]}"
  grep -o '{"step[^}]*}[^}]*}' "/tmp/train_$v.log" | sed -E 's/"loss": ([0-9.]{5})[0-9]*/\1/; s/"minutes": ([0-9.]{4})[0-9]*/\1/'
  grep -E "Error|error" "/tmp/train_$v.log" | tail -3
done
rm -f "$OUT"/*/*.sha256  # the device tool returns at most 8 files; the sidecar is recomputed here
