"""Reconstruction quality and fit time on SmolLM2-135M's token-embedding table.

For k in {58, 115, 230} (compression ratio about 10, 5 and 2.5 in parameters), fits the
paper's two methods with the paper's settings and this package's fast autoencoder, with
scalar quantization (int8 per row, int4 in groups of 32) beside them; reports mean row
cosine, RMSE, fit seconds and the stored parameters and bytes. Prints a table and writes
a CSV.

    python benchmarks/bench_reconstruction.py [--device cpu] [--ranks 58 115 230]
"""

import argparse

from _common import (
    RESULTS,
    format_table,
    machine_description,
    smollm2_embedding,
    timed,
    write_csv,
)

from skdirection import DirectionAutoEncoder, ScalarQuantizer, TruncatedSVDCompressor
from skdirection.metrics import mean_cosine_similarity, reconstruction_rmse

COLUMNS = [
    "method",
    "k",
    "params_ratio",
    "bytes_ratio",
    "mean_cosine",
    "rmse",
    "fit_seconds",
]


def evaluate(name, model, X):
    _, seconds = timed(model.fit, X)
    table = model.compress(X)
    X_hat = table.decode().numpy()
    return {
        "method": name,
        "k": getattr(model, "n_components", "-"),
        "params_ratio": X.size / table.n_parameters,
        "bytes_ratio": X.nbytes / table.n_bytes,
        "mean_cosine": mean_cosine_similarity(X, X_hat),
        "rmse": reconstruction_rmse(X, X_hat),
        "fit_seconds": seconds,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[58, 115, 230])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--csv", default=str(RESULTS / "reconstruction.csv"))
    args = parser.parse_args(argv)

    X = smollm2_embedding()
    rows = []
    for k in args.ranks:
        # The paper's baseline: sklearn's TruncatedSVD on the raw table (no centring).
        svd = TruncatedSVDCompressor(k, device=args.device, random_state=42)
        rows.append(evaluate("truncated SVD", svd, X))
        # The paper's autoencoder with the paper's training (seed 1).
        paper = DirectionAutoEncoder.paper(k, device=args.device, random_state=args.seed)
        rows.append(evaluate("direction AE (paper)", paper, X))
        fast = DirectionAutoEncoder(k, device=args.device, random_state=args.seed)
        rows.append(evaluate("direction AE (default)", fast, X))
        print(format_table(rows[-3:], COLUMNS), flush=True)
    for name, quantizer in [
        ("int8 per row", ScalarQuantizer(bits=8)),
        ("int4 groups of 32", ScalarQuantizer(bits=4, group_size=32)),
    ]:
        rows.append(evaluate(name, quantizer, X))

    print(f"\nSmolLM2-135M input embedding, {X.shape[0]} x {X.shape[1]} float32")
    print(f"Machine: {machine_description(args.device)}\n")
    print(format_table(rows, COLUMNS))
    print(f"\nCSV: {write_csv(rows, COLUMNS, args.csv)}")


if __name__ == "__main__":
    main()
