#!/usr/bin/env bash
# The GPU figures of the performance issue, in one run of under 10 minutes on one GPU:
#   bash bench/gpu.sh            (from the repository root, with `make install` done)
# 1. nccl DDP works on this GPU, and fp32 / bf16 / fp16 training samples/s and peak memory
#    of HDemucs, HTDemucs and BS-RoFormer at their recipes' batch and segment (bench.amp:
#    each step under one-process DDP with nccl, a GradScaler for fp16);
# 2. the same HTDemucs step with optim.checkpointing (bench.amp passes the override);
# 3. separation: seconds per minute of audio of HTDemucs and SCNet, eager and compiled
#    (bench.rtf), and the GPU bss_eval against museval (bench.eval).
set -u
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-5}
run() { echo; echo "\$ $*"; timeout "${LIMIT:-150}" "$@" || echo "(failed or timed out: $?)"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
run $PY -m bench.amp --device cuda --steps "$STEPS" --batch-size 8 --segment 7.8 model=hdemucs
run $PY -m bench.amp --device cuda --steps "$STEPS" --batch-size 8 --segment 7.8 model=htdemucs
run $PY -m bench.amp --device cuda --steps "$STEPS" --batch-size 8 --segment 7.8 model=htdemucs \
    optim.checkpointing=true
run $PY -m bench.amp --device cuda --steps "$STEPS" --batch-size 10 --segment 2.98 \
    variant=bs_roformer
LIMIT=240 run $PY -m bench.rtf --device cuda --models htdemucs scnet --seconds 60 --compile
run $PY -m bench.eval --device cuda
