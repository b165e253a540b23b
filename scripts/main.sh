#!/usr/bin/env bash
# Set up .venv if needed, then the main job: compress SmolLM2-135M's token embedding with
# truncated SVD, the paper's direction autoencoder and this package's fast one at
# compression ratios 10, 5 and 2.5, and print what each costs in perplexity on English
# Wikipedia text. Extra arguments go to `skdirection evaluate` (e.g. --format json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/skdirection evaluate --model smollm2 \
    --method svd --method direction --method direction-fast \
    --ratio 10 --ratio 5 --ratio 2.5 --target input --max-tokens 2048 "$@"
