#!/usr/bin/env bash
# Multi-GPU / multi-node `fastssl pretrain` with torchrun.
#
# Every process runs `fastssl pretrain`; Lightning reads torchrun's environment (RANK,
# LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT) and joins the process group. The training
# loader is built after that, with this process's rank and the world size, so every rank
# reads its own 1/WORLD_SIZE of the (seeded, per-epoch shuffled) data. --batch-size is the
# GLOBAL batch: each process gets batch_size / (GPUS x NODES) images per step.
#
# Usage (one node, 8 GPUs):
#   tools/launch_torchrun.sh pipelines/simclr.yaml --data /data/imagenet/train --out runs/simclr
# Several nodes: run the same command on every node with NODES, NODE_RANK and MASTER_ADDR set:
#   NODES=4 NODE_RANK=0 MASTER_ADDR=node0 GPUS=8 tools/launch_torchrun.sh pipelines/dino.yaml ...
set -euo pipefail

GPUS=${GPUS:-$(python -c "import torch; print(max(torch.cuda.device_count(), 1))")}
NODES=${NODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}

if [[ $# -lt 1 ]]; then
  echo "usage: $0 RECIPE.yaml [fastssl pretrain options...]" >&2
  exit 2
fi

exec torchrun \
  --nnodes "$NODES" --node_rank "$NODE_RANK" --nproc_per_node "$GPUS" \
  --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
  -m fastssl pretrain "$@" --accelerator gpu --devices "$GPUS" --num-nodes "$NODES"
