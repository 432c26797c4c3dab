#!/usr/bin/env bash
# The paper's Experiment 4 setting on a GPU node: OpenCLIP and OpenAI ViT-B/16 and ViT-L/14, the per-head
# PCA basis fitted on ImageNet train, its ten datasets, every alignment method. Needs the weights (the
# Hugging Face hub, once), ImageNet train as an image folder, and torchvision's datasets (downloaded once).
# RESISC45 has no torchvision loader: download it and pass its folder as the second argument.
# Usage: NPROC=8 WORKERS=7 bash tools/paper_setting.sh /data/imagenet/train [/data/NWPU-RESISC45]
# (NPROC: GPUs on this node; WORKERS: image-decoding processes per GPU.) One JSON line per run in
# out/paper_setting.jsonl. Several nodes: run the torchrun steps with torchrun's --nnodes/--rdzv flags (README).
set -euo pipefail
IMAGENET=$1
DATASETS=(cifar10 cifar100 dtd eurosat gtsrb mnist stanford-cars sun397 svhn)
if [ $# -ge 2 ]; then DATASETS+=("folder:$2"); fi
NPROC=${NPROC:-1}
WORKERS=${WORKERS:-4}
mkdir -p out
encode() {  # precompute on every GPU of this node; prints the last JSON line of rank 0
  torchrun --standalone --nproc-per-node "$NPROC" -m residual_core precompute --device cuda --workers "$WORKERS" \
    --batch-size 256 "$@" | tail -n 1
}
field() { python -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
for model in b16 l14 b16-openai l14-openai; do
  # 1. the ImageNet-train basis: moments streamed, nothing stored per image
  basis=$(field "$(encode --model "$model" --dataset "folder:$IMAGENET" --split all --basis-only)" basis)
  for dataset in "${DATASETS[@]}"; do
    # 2. the dataset's train cache in that basis, then val and test in the train cache's (the same) basis
    train=$(field "$(encode --model "$model" --dataset "$dataset" --split train --basis-from "$basis")" cache)
    for split in val test; do
      encode --model "$model" --dataset "$dataset" --split "$split" --basis-from "$train" > /dev/null
    done
    # 3. λ training on the cached arrays: one process, seconds per method (finds the caches built above)
    for method in zeroshot coarse fine full linear spectral; do
      python -m residual_core align --model "$model" --dataset "$dataset" --method "$method" --basis-from "$basis" \
        | tail -n 1 | sed "s|^{|{\"model\": \"$model\", \"dataset\": \"$dataset\", |" >> out/paper_setting.jsonl
    done
  done
done
