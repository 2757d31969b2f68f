#!/bin/sh
# Regenerate the README pictures of `firesim paper`, `firesim recommend` and the what-if timeline.
# Deterministic (the model, not a measurement): run from the repository root after any change to the model.
set -eu
cd "$(dirname "$0")/.."
.venv/bin/firesim paper --plot docs/paper-firecaffe.png > /dev/null
.venv/bin/firesim recommend --model resnet50 --epochs 90 --deadline 24h --budget 20000 --plot docs/recommend-pareto.png > /dev/null
.venv/bin/firesim predict --model resnet50 --hardware ethernet-10g --gpus 8 --algo ring --batch 512 --engine des \
    --rank-speed 3=0.67 --timeline docs/timeline-straggler.png > /dev/null
