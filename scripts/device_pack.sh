#!/usr/bin/env bash
# Prepare .device/ (git-ignored) for a GPU machine that has torch, scikit-learn and
# transformers but no network and no model packages: pytest and its pure-Python
# dependencies, SmolLM2's embedding in float16 (57 MB, under the 64 MiB a run carries)
# and its token counts on the Wikipedia slice. Then, through the device tool:
#   run(command="bash scripts/device_check.sh", carry=[".device"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
rm -rf .device && mkdir -p .device/site
site=$($PY -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
for package in pytest _pytest pluggy iniconfig py.py; do
    cp -r "$site/$package" .device/site/
done
$PY - <<'EOF'
import numpy as np

from skdirection.adapters.transformers import token_counts
from skdirection.datasets import load_smollm2, load_wikipedia_text

model, tokenizer = load_smollm2()
table = model.get_input_embeddings().weight.detach().numpy()
np.save(".device/smollm2.npy", table.astype(np.float16))
counts = token_counts(tokenizer, load_wikipedia_text(), len(table))
np.save(".device/smollm2_counts.npy", np.asarray(counts, dtype=np.float32))
EOF
du -sh .device
