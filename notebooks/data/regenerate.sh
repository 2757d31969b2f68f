#!/bin/sh
# Regenerate the measured data of notebooks/validation.ipynb on this machine (loopback, 4 ranks, gloo).
# Absolute times depend on the machine and its load: run it on a quiet machine, from any directory.
set -eu
cd "$(dirname "$0")/../.."
echo "measured on $(hostname) ($(nproc) cores), load before: $(cut -d' ' -f1-3 /proc/loadavg)" > notebooks/data/load.txt
.venv/bin/firerun run --nproc 4 calibrate --name loopback-4 --output notebooks/data/loopback-profile.yaml
.venv/bin/firerun run --nproc 4 exec --algo ring --size 16MiB --iters 5 --trace notebooks/data/ring-16MiB-loopback.json
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >> notebooks/data/load.txt
cat notebooks/data/load.txt
