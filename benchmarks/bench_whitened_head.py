"""Sensitivity-aware compression of a tied table (issue 14): the frequency-aware mix
(and scalar codes) on SmolLM2-135M's tied embedding, plain or with its columns weighed
by the head's inputs.

For the head, a row's error ``e_v`` moves logit ``v`` by ``h . e_v``: its expected
squared logit error is ``e_v^T H e_v`` with ``H = E[h h^T]`` over the head's inputs
(:func:`skdirection.adapters.transformers.head_moment`). Variants, with
``H_a = (1-a) H / mean(diag H) + a I``:

- ``diag:A``: columns scaled by ``sqrt(diag H_a)`` (:class:`ColumnWeightedCompressor`,
  ``n_features`` stored values more);
- ``full:A``: whitening, compress ``W H_a^{1/2}`` and decode through ``H_a^{-1/2}``
  (a :class:`LinearDecodedTable` with a float16 ``d x d`` matrix, counted in the bytes);
- ``top:K``: the ``K`` top eigen-directions of ``H`` stored exactly (float16), the rest
  compressed.

Token counts and ``H`` from gensim's Lee + Wikipedia (``H`` from the first
``--calibration-tokens``); perplexity, KL divergence and top-1 agreement on Hamlet
(``--tokens``), target both. Prints one line a (codec, ratio, variant).

    python benchmarks/bench_whitened_head.py --tokens 4096 --calibration-tokens 4096 \
        --ratios 8 16 32 --variants diag:0.8

gave (2-core CPU, torch 2.13.0): mix at 8x x1.030 (KL 0.032) plain, x1.013 (0.020)
with diag:0.8; 16x x1.81 (0.591), x1.28 (0.235); 32x x15.2 (2.70), x2.73 (1.01);
diag:0.6 gave x1.23 (0.215) at 16x and x2.59 (0.944) at 32x.
On 1024 tokens, int3 in groups of 32 (8x): x1.34 (0.336) plain, diag:0.9 x1.24
(0.213), full:0.9 x1.27 (0.267, 7.6x), top:1 x1.27 (0.273), top:16 x1.37 (0.304);
the mix at 16x: plain x1.88 (0.645), full:0.5 x2.22 (0.825), diag:0.95 x1.33 (0.271),
diag:0.8 x1.22 (0.196).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, hamlet_text, lm_meter, machine_description  # noqa: E402

from skdirection import FrequencyMixedCompressor, ScalarQuantizer  # noqa: E402
from skdirection.codecs import DenseTable, LinearDecodedTable  # noqa: E402


def whitening(H, alpha, diagonal=False):
    """``(S, S^{-1})`` of ``H_a = (1-a) H / mean(diag H) + a I``."""
    Ha = (1 - alpha) * H / np.mean(np.diag(H)) + alpha * np.eye(len(H))
    if diagonal:
        scale = np.sqrt(np.diag(Ha))
        return np.diag(scale).astype(np.float32), np.diag(1 / scale).astype(np.float32)
    values, vectors = np.linalg.eigh(Ha)
    values = np.clip(values, 1e-8 * values.max(), None)
    S = (vectors * np.sqrt(values)) @ vectors.T
    S_inv = (vectors / np.sqrt(values)) @ vectors.T
    return S.astype(np.float32), S_inv.astype(np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--calibration-tokens", type=int, default=16384)
    parser.add_argument("--ratios", type=float, nargs="*", default=[8, 16, 32])
    parser.add_argument(
        "--variants",
        nargs="*",
        default=["full:0.9", "diag:0.5", "top:4"],
        help="besides plain: full:A, diag:A (whitening), top:K (K directions exact)",
    )
    parser.add_argument("--scalar", type=int, nargs="*", default=[], help="bits, g32")
    parser.add_argument("--sides", action="store_true", help="also input / output alone")
    parser.add_argument("--no-plain", action="store_true", help="skip the baseline")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="the mix's random_state")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine_description()}", flush=True)

    from skdirection.adapters.transformers import head_moment, token_counts
    from skdirection.datasets import load_lee_text, load_smollm2, load_wikipedia_text

    model, tokenizer = load_smollm2()
    X = model.get_input_embeddings().weight.detach().numpy().copy()
    n, d = X.shape
    calibration = load_lee_text() + load_wikipedia_text()
    counts = token_counts(tokenizer, calibration, n)
    start = time.perf_counter()
    cache = CACHE / f"smollm2_head_moment_{args.calibration_tokens}.npy"
    if cache.exists():
        H = np.load(cache)
    else:
        H = head_moment(model, tokenizer, calibration, max_tokens=args.calibration_tokens)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, H)
    print(f"H from {args.calibration_tokens} tokens in {time.perf_counter() - start:.0f} s")
    eig = np.linalg.eigvalsh(H / np.mean(np.diag(H)))
    diagonal = np.sort(np.diag(H))[::-1] / np.mean(np.diag(H))
    print(
        f"eigenvalues of H/mean(diag): top {np.round(eig[::-1][:8], 1)}, median "
        f"{np.median(eig):.3f}; largest diagonal {np.round(diagonal[:4], 1)}"
    )
    top = np.linalg.eigh(H)[1][:, -1]
    print(f"top eigenvector: largest |component| {np.abs(top).max():.3f}")
    measure = lm_meter(model, tokenizer, hamlet_text(), args.tokens, 1024)
    base = measure()["perplexity"]
    print(f"original perplexity {base:.3f} ({args.tokens} tokens of Hamlet)", flush=True)

    def run(name, make, variant, ratio):
        """``variant``: ``("plain",)``, ``("full", a)``, ``("diag", a)``, ``("top", k)``."""
        start = time.perf_counter()
        kind = variant[0]
        extra = 0
        if kind == "plain":
            table = make(ratio).fit(X, sample_weight=counts).compress(X)
            decoded_table = table
        elif kind in ("full", "diag"):
            S, S_inv = whitening(H, variant[1], diagonal=kind == "diag")
            extra = d * d * 2 if kind == "full" else d * 2
            Xw = X @ S
            budget = X.nbytes / ratio - extra
            inner = make(X.nbytes / budget).fit(Xw, sample_weight=counts).compress(Xw)
            decoded_table = LinearDecodedTable(inner, torch.from_numpy(S_inv).half())
        else:
            k = variant[1]
            U = np.linalg.eigh(H)[1][:, ::-1][:, :k].astype(np.float32)
            exact = (X @ U).astype(np.float16)
            residual = X - exact.astype(np.float32) @ U.T
            extra = n * k * 2 + k * d * 4
            budget = X.nbytes / ratio - extra
            inner = make(X.nbytes / budget).fit(residual, sample_weight=counts)
            inner = inner.compress(residual)
            with torch.no_grad():
                rows = inner.decode().float().numpy() + exact.astype(np.float32) @ U.T
            decoded_table = DenseTable(torch.from_numpy(rows))
        seconds = time.perf_counter() - start
        n_bytes = table.n_bytes if kind == "plain" else inner.n_bytes + extra
        with torch.no_grad():
            error = decoded_table.decode().float().numpy() - X
        head_error = np.einsum("ij,jk,ik->i", error, H, error)
        w = counts + 0.5
        scores = measure(decoded_table, "both")
        label = kind if kind == "plain" else f"{kind} {variant[1]:g}"
        print(
            f"{name:10s} ratio {ratio:>4g} {label:9s} bytes_ratio "
            f"{X.nbytes / n_bytes:6.2f} ppl_ratio {scores['perplexity'] / base:7.4f} "
            f"kl {scores['kl_divergence']:.4f} top1 {scores['top1_agreement']:.4f} "
            f"mse {np.mean(error**2):.3e} head_err(w) "
            f"{np.average(head_error, weights=w):.3e} fit {seconds:.0f}s",
            flush=True,
        )
        if args.sides:
            for side in ("input", "output"):
                part = measure(decoded_table, side)
                print(
                    f"    {side}: ppl_ratio {part['perplexity'] / base:.4f} "
                    f"kl {part['kl_divergence']:.4f}",
                    flush=True,
                )

    variants = [("plain",)] * (not args.no_plain)
    for text in args.variants:
        kind, value = text.split(":")
        variants.append((kind, int(value) if kind == "top" else float(value)))
    for bits in args.scalar:
        for variant in variants:
            run(
                f"int{bits} g32",
                lambda r, b=bits: ScalarQuantizer(b, group_size=32),
                variant,
                8,
            )
    for ratio in args.ratios:
        for variant in variants:
            run(
                "mixed",
                lambda r: FrequencyMixedCompressor(r, random_state=args.seed),
                variant,
                ratio,
            )


if __name__ == "__main__":
    main()
