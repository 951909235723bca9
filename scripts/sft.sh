#!/usr/bin/env bash
# Stage 2 (all weights, from the stage-1 export in VAMBA_STAGE1) with torchrun: one node with 8 GPUs by default, or several nodes from the environment
# (NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT). Extra arguments are Hydra overrides, e.g. deepspeed=zero3_offload.
# Gradient accumulation is computed by the trainer from train.global_batch_size (128), the per-device batch and
# the world size.
set -euo pipefail
cd "$(dirname "$0")/.."
exec torchrun --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --nproc_per_node="${GPUS_PER_NODE:-8}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
  -m vamba train experiment=paper_sft "$@"
