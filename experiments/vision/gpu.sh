#!/usr/bin/env bash
# Paper Tables 4, 5 and 10 on a GPU machine in one command: SVHN, CIFAR-10 and CIFAR-100, every
# method (GEDI, GEDI no gen, JEM, Barlow Twins, SwAV), the paper's settings
# (experiments/configs/vision/, Table 9 / appendix M), 5 seeds, FID with Inception features.
#
#   bash experiments/vision/gpu.sh                              # everything, into runs/vision
#   RUNS=runs/v SEEDS=5 NPROC=4 bash experiments/vision/gpu.sh  # each run on 4 GPUs (torchrun)
#   DATASETS=cifar10 bash experiments/vision/gpu.sh --set epochs=2   # a short check; flags after the
#                                                                    # script go to every table command
#
# Settings by environment: RUNS (runs/vision), SEEDS (5: seeds 0..4, or a list such as 10,11),
# DATASETS ("svhn cifar10 cifar100"), METHODS (all five), DATA (./data: where torchvision downloads
# the sets), NPROC (the number of GPUs), DEVICE (cuda if there is one), FID_FEATURES (inception; its
# weights go to torch's hub cache), FID_SAMPLES / FID_STEPS (10000 / 500), OOD_IN / OOD (Table 5:
# "cifar10" against "svhn cifar100").
#
# Every run lives in RUNS/<dataset>/<method>/seed<k>/ with a checkpoint per epoch: rerunning the
# command resumes killed runs, reuses finished ones and rewrites the tables (RUNS/tables/table4.md,
# table5.md, table10.md and their CSVs). Tables 5 and 10 evaluate the Table 4 runs; they train nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
py="${PYTHON:-python}"
nproc="${NPROC:-$("$py" -c 'import torch; print(max(1, torch.cuda.device_count()))')}"
device="${DEVICE:-$("$py" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}"
read -r -a datasets <<< "${DATASETS:-svhn cifar10 cifar100}"
read -r -a methods <<< "${METHODS:-gedi gedi_no_gen jem barlow swav}"
read -r -a ood <<< "${OOD:-svhn cifar100}"
common=(--runs "${RUNS:-runs/vision}" --seeds "${SEEDS:-5}" --nproc "$nproc" --device "$device"
        --data-root "${DATA:-data}" --download --methods "${methods[@]}")
"$py" -c 'import torch; print(f"torch {torch.__version__}, {torch.cuda.device_count()} GPU(s)")'
"$py" -m experiments.vision.table4 "${common[@]}" --datasets "${datasets[@]}" --fid \
    --fid-features "${FID_FEATURES:-inception}" --fid-samples "${FID_SAMPLES:-10000}" --fid-steps "${FID_STEPS:-500}" "$@"
"$py" -m experiments.vision.table5 "${common[@]}" --datasets "${OOD_IN:-cifar10}" --ood "${ood[@]}" --no-train "$@"
"$py" -m experiments.vision.table10 "${common[@]}" --datasets "${datasets[@]}" --no-train "$@"
echo "tables: ${RUNS:-runs/vision}/tables/table4.md table5.md table10.md"
