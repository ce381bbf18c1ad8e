#!/usr/bin/env bash
# A Slurm job array: 16 tasks, each classifying its share of list.txt into its own file.
# Submit with `sbatch slurm-array.sh`; Slurm sets SLURM_ARRAY_TASK_ID, _MIN and _COUNT, which
# `--shard auto` reads. A requeued task (--requeue) resumes its own file.
#SBATCH --job-name=zoo-classify
#SBATCH --array=0-15
#SBATCH --cpus-per-task=4
#SBATCH --mem=2G
#SBATCH --requeue
#SBATCH --output=logs/zoo-%A_%a.log
set -euo pipefail
export HF_HUB_OFFLINE=1                      # the model was fetched once with `zoo download resnet50`
export RAYON_NUM_THREADS="${SLURM_CPUS_PER_TASK:-4}"
MODEL="${ZOO_MODEL:-resnet50}"
mkdir -p results
zoo run "$MODEL" --files-from list.txt --json --shard auto \
  --output "results/shard-${SLURM_ARRAY_TASK_ID}.jsonl" --resume
