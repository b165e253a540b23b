#!/usr/bin/env bash
# Set up .venv if needed, then the main job: compress SmolLM2-135M's token embedding at 8x
# and 16x fewer bytes with the paper's methods (truncated SVD and the direction-loss
# autoencoder, trained the package's fast way) and the package's recommended ones
# (scalar codes, product quantization, and `auto` with token counts from gensim's news
# corpus), and print what each costs on English Wikipedia text: perplexity, KL divergence
# from the original model's next-token distribution, top-1 agreement; the achieved ratio
# counted in parameters and in bytes. Extra arguments go to `skdirection evaluate`
# (e.g. --format json, --target both, --method direction for the paper's exact training).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/skdirection evaluate --model smollm2 \
    --method svd --method direction-fast --method scalar --method pq --method auto \
    --ratio-unit bytes --ratio 8 --ratio 16 --counts-text lee \
    --target input --max-tokens 2048 "$@"
