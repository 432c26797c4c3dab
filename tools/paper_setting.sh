#!/usr/bin/env bash
# The paper's Experiment 4 setting: OpenCLIP and OpenAI ViT-B/16 and ViT-L/14 on its ten datasets, every
# alignment method. Needs a network once (weights from the Hugging Face hub, datasets through
# torchvision) and, to finish in hours rather than days, a GPU for the precompute (--device cuda).
# RESISC45 has no torchvision loader: download it, then pass it as folder:/path/to/NWPU-RESISC45.
# Usage: bash tools/paper_setting.sh [RESISC45_FOLDER]   (one JSON line per run in out/paper_setting.jsonl)
set -euo pipefail
DATASETS=(cifar10 cifar100 dtd eurosat gtsrb mnist stanford-cars sun397 svhn)
if [ $# -ge 1 ]; then DATASETS+=("folder:$1"); fi
mkdir -p out
for model in b16 l14 b16-openai l14-openai; do
  for dataset in "${DATASETS[@]}"; do
    for method in zeroshot coarse fine full linear spectral; do
      python -m residual_core align --model "$model" --dataset "$dataset" --method "$method" --device cuda \
        | tail -n 1 | sed "s|^{|{\"model\": \"$model\", \"dataset\": \"$dataset\", |" >> out/paper_setting.jsonl
    done
  done
done
