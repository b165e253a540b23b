"""The codecs a frequency-aware mix offers each row, by family, and what each costs."""

from dataclasses import dataclass

import numpy as np
import torch

from ..._engine.backend import rows_per_chunk
from ..._engine.numerics import row_cosine, unit_rows
from ...codecs import (
    DenseCodec,
    NormScaledCodec,
    ProductCodec,
    ProjectionCodec,
    ScalarCodec,
)
from ...codecs.product import MAX_CENTROIDS

_LATENT_BITS = 8
# The first fit of the codebooks only has to rank the codecs for a first assignment, so
# it runs few iterations on a sample of this many rows a centroid and a value of the
# block (as many distances for every block size; more rows where a block has more
# dimensions to fit); the codebooks that rows chose are then refitted on those rows,
# all of them. On SmolLM2's table with token counts, 4 + 8 iterations reach a lower
# weighted error at 8x and 16x than 8 iterations on every row followed by 4; two refits
# of 4 iterations (the mix's default ``n_refits=2``) a lower one at 16x than one of 8
# (0.0259 against 0.0277), in 10% to 30% more time.
_KMEANS_ITER = 4
_KMEANS_POINTS_PER_VALUE = 32
_REFIT_ITER = 4  # a refit starts from the codebooks it refines
# Codebooks first fitted on the mix's screening sample (with _KMEANS_ITER iterations:
# with 2, one seed of three at 32x on SmolLM2's table kept the wrong block sizes) need
# fewer on the table, and fewer rows: from them, 2 iterations on 16 rows a centroid and
# a value give the weighted error that 4 from scratch on 32 gave at 16x (seeds 0 to 2:
# 0.02543, 0.02544, 0.02544 against 0.02544, 0.02544, 0.02543) and at 32x (0.08322,
# 0.08323, 0.08317; 0.08317, 0.08314, 0.08315 before the screen), in 5% to 10% less
# time than on 32. One iteration gave 0.02545 to 0.02548 at 16x; 8 rows a centroid and
# a value, at 32x, 0.08616 for seed 2, whose first assignment then took the wrong
# block sizes.
_REFINE_ITER = 2
_REFINE_POINTS_PER_VALUE = 16
# A searched table's projected codes (few candidates, rows that all take one of them):
# on spaCy's word vectors at 32x without norms (every row coded), 8 iterations and
# refits of 8 keep a 10-NN overlap of 0.6510 where 4 keep 0.6488 (16: 0.6516), in 1.6x
# the time.
_PROJECTED_KMEANS_ITER = 8
_PROJECTED_REFIT_ITER = 8
# Values reconstructed at once when measuring a codec: bounded working memory, and on
# the CPU few enough that the reconstruction and the cosines stay in cache (on
# SmolLM2's table 3640 rows measure the scalar and low-rank codecs 1.3x and 2.5x
# faster than 65536); on a GPU, larger chunks launch fewer kernels.
_CPU_MEASURE_VALUES = 1 << 21
_DEVICE_MEASURE_VALUES = 1 << 26
# Values of the rows a product quantizer's search takes at once on the CPU: enough rows
# for its blocks to go to worker threads (see nearest_centroids).
_CPU_SEARCH_VALUES = 1 << 23


@dataclass
class Candidate:
    """One codec the mix may give a row, fitted on the table, and what it would cost.

    Attributes
    ----------
    codec : Codec
        Fitted.
    family : CandidateFamily
        The family that made it.
    row_cost : float
        Stored bytes (or parameters) of one row, in the budget's unit.
    fixed_cost : float
        What the codec stores once if any row uses it (codebooks, a basis).
    distance : ndarray of shape (n_rows,)
        Cosine distance of every row to its reconstruction by the codec.
    codes : tensor or None
        What the family keeps of the rows' encoding for a refit (see
        :meth:`CandidateFamily.distances`).
    """

    codec: object
    family: object
    row_cost: float
    fixed_cost: float
    distance: np.ndarray
    codes: object = None

    @property
    def name(self):
        return self.codec.name


class CandidateFamily:
    """A kind of codec the mix can give a row: which codecs to try, how to fit them on
    the table, and how to refit them on the rows that chose them.

    Subclass it and register an instance with :func:`register_candidates` to add a codec
    to :class:`~skdirection.FrequencyMixedCompressor`; the budget solver needs no change.
    """

    def codecs(self, mix, n_rows, n_features):
        """Unfitted codecs for the mix's parameters and a table of this shape."""
        raise NotImplementedError

    def fit(self, codecs, rows, weight, generator):
        """Fit the codecs on the rows (float32 tensor) and their weights (numpy)."""
        for codec in codecs:
            codec.fit(rows, torch.from_numpy(weight), generator)

    def refine(self, codecs, rows, weight, generator):
        """Fit on the whole table codecs already fitted on a sample of its rows (the
        mix's screen); by default, :meth:`fit` again."""
        self.fit(codecs, rows, weight, generator)

    def distances(self, codec, rows):
        """Every row's cosine distance to its reconstruction by the codec (float64
        numpy), and what a refit may reuse of their encoding (``None`` by default).
        By default the rows are reconstructed a chunk at a time."""
        chunk = rows_per_chunk(
            rows.shape[1], rows.device, _CPU_MEASURE_VALUES, _DEVICE_MEASURE_VALUES
        )
        return np.concatenate(
            [
                (1 - row_cosine(part, codec.reconstruct(part))).double().cpu().numpy()
                for part in rows.split(chunk)
            ]
        ), None

    def refit(self, codecs, rows, weight, members, generator, codes=None):
        """Refit the codecs on the rows assigned to them (``members``: one boolean mask
        a codec; ``codes``: what :meth:`distances` kept of every row, one a codec);
        return the codecs refitted (``True``: all of them; ``False`` or an empty list:
        none). Codecs that learn nothing from the table keep the default: nothing to
        refit."""
        return []

    def learned(self, codecs):
        """Fitted attributes (name ending in ``_``: value) the mix exposes for these
        codecs; none by default."""
        return {}


CANDIDATE_FAMILIES = {}


def register_candidates(name, family):
    """Offer the codecs of ``family`` (a :class:`CandidateFamily`) to every row of a
    :class:`~skdirection.FrequencyMixedCompressor`; they compete with the built-in
    families (``"exact"``, ``"scalar"``, ``"product"``, ``"low_rank"``,
    ``"projected_product"``) within the budget. Returns ``family``."""
    CANDIDATE_FAMILIES[name] = family
    return family


def _float_dtype(mix):
    # A bytes budget stores floats in half precision; a parameters budget counts values.
    return torch.float16 if mix.ratio_unit == "bytes" else torch.float32


def _norm_dtype(mix):
    """How the codecs of unit directions store each row's norm: not at all without
    ``keep_norms``."""
    return _float_dtype(mix) if mix.keep_norms else None


class ExactFamily(CandidateFamily):
    """The row as it is: float16 under a bytes budget, float32 under a parameters one."""

    def codecs(self, mix, n_rows, n_features):
        return [DenseCodec(_float_dtype(mix))]


class ScalarFamily(CandidateFamily):
    """Scalar codes at each of ``bits`` and each of ``group_sizes`` (bytes budgets only:
    a code counts as a parameter, so under a parameters budget they save nothing)."""

    def codecs(self, mix, n_rows, n_features):
        if mix.ratio_unit != "bytes":
            return []
        d = n_features
        groups = sorted({d if g is None else min(int(g), d) for g in mix.group_sizes})
        return [
            ScalarCodec(b, None if group == d else group)
            for b in sorted({int(b) for b in mix.bits}, reverse=True)
            for group in groups
        ]


class ProductFamily(CandidateFamily):
    """Product quantization of the unit directions in blocks of each of
    ``block_sizes``, norms stored apart; codebooks refitted on the rows that chose them."""

    def codecs(self, mix, n_rows, n_features):
        dtype = _float_dtype(mix)
        block_sizes = sorted({int(b) for b in mix.block_sizes if 0 < int(b) < n_features})
        return [
            NormScaledCodec(
                ProductCodec(b, MAX_CENTROIDS, dtype, _KMEANS_ITER), _norm_dtype(mix)
            )
            for b in block_sizes
        ]

    def fit(self, codecs, rows, weight, generator, *, warm=False):
        if not codecs:
            return
        directions = unit_rows(rows)[0]  # once for every block size
        n_centroids = min(MAX_CENTROIDS, np.count_nonzero(weight))
        weight = torch.from_numpy(weight)
        for codec in codecs:
            # A sample with fewer rows of positive weight than centroids gave fewer.
            start = warm and codec.inner.codebooks.shape[1] == n_centroids
            points = _REFINE_POINTS_PER_VALUE if start else _KMEANS_POINTS_PER_VALUE
            codec.inner.fit(
                directions,
                weight,
                generator,
                init=codec.inner.codebooks if start else None,
                n_iter=_REFINE_ITER if start else None,
                max_points_per_centroid=points * codec.inner.block_size,
            )

    def refine(self, codecs, rows, weight, generator):
        self.fit(codecs, rows, weight, generator, warm=True)

    refit_iter = _REFIT_ITER

    def distances(self, codec, rows):
        # The codes of the rows' directions: a refit's first assignment (its rows'
        # nearest entries of the codebooks it starts from) then searches nothing. The
        # distances come from the search, without decoding; the chunks are large, for
        # the search spreads its blocks over threads.
        chunk = rows_per_chunk(
            rows.shape[1], rows.device, _CPU_SEARCH_VALUES, _DEVICE_MEASURE_VALUES
        )
        measured = [
            codec.inner.cosine_distances(unit_rows(part)[0]) for part in rows.split(chunk)
        ]
        distances = torch.cat([distance for distance, _ in measured]).cpu().numpy()
        return distances, torch.cat([codes for _, codes in measured])

    def refit(self, codecs, rows, weight, members, generator, codes=None):
        refitted, directions = [], None
        codes = [None] * len(codecs) if codes is None else codes
        for codec, rows_of_codec, known in zip(codecs, members, codes, strict=True):
            if np.count_nonzero(weight[rows_of_codec]) < MAX_CENTROIDS:
                continue
            if directions is None:
                directions = unit_rows(rows)[0]
            # The rows of other codecs weigh nothing here: left out, they cost nothing.
            chosen = torch.from_numpy(np.flatnonzero(rows_of_codec)).to(rows.device)
            quantizer = self._quantizer(codec)
            quantizer.fit(
                self._quantized_rows(codec, directions[chosen]),
                torch.from_numpy(weight[rows_of_codec]),
                generator,
                init=quantizer.codebooks,
                init_codes=None if known is None else known[chosen.to(known.device)],
                n_iter=self.refit_iter,
            )
            refitted.append(codec)
        return refitted

    def _quantizer(self, codec):
        """The :class:`ProductCodec` of a candidate, which a refit fits again."""
        return codec.inner

    def _quantized_rows(self, codec, directions):
        """What that quantizer encodes for these unit rows."""
        return directions

    def learned(self, codecs):
        return {
            "codebooks_": {
                c.inner.block_size: c.inner.codebooks.cpu().numpy() for c in codecs
            }
        }


class LowRankFamily(CandidateFamily):
    """Low-rank codes of the unit directions at each of ``ranks``, over one weighted
    basis (int8 latent codes under a bytes budget), norms stored apart."""

    def codecs(self, mix, n_rows, n_features):
        dtype = _float_dtype(mix)
        if mix.ratio_unit == "bytes":
            latent = ScalarCodec(_LATENT_BITS, clip_search=False)
        else:
            latent = DenseCodec(torch.float32)
        ranks = sorted({int(k) for k in mix.ranks if 0 < int(k) < n_features}, reverse=True)
        return [
            NormScaledCodec(ProjectionCodec(k, latent, dtype), _norm_dtype(mix))
            for k in ranks
        ]

    def fit(self, codecs, rows, weight, generator):
        if not codecs:
            return
        largest = codecs[0]  # the ranks are in decreasing order: one basis serves all
        largest.fit(rows, torch.from_numpy(weight), generator)
        for codec in codecs[1:]:
            codec.inner.components = largest.inner.components[: codec.inner.n_components]

    def refit(self, codecs, rows, weight, members, generator, codes=None):
        if not codecs:
            return []
        chosen = np.any(members, axis=0)
        if chosen.sum() <= codecs[0].inner.n_components:
            return []
        self.fit(codecs, rows, np.where(chosen, weight, 0.0), generator)
        return codecs

    def learned(self, codecs):
        return {"components_": codecs[0].inner.components.cpu().numpy() if codecs else None}


class ProjectedProductFamily(ProductFamily):
    """Product quantization, in blocks of each of ``projected_block_sizes``, of the
    unit directions projected on as many of their weighted principal directions as the
    budget pays for when every row takes it (:class:`ProjectionCodec`: the directions
    ordered so that every block carries a like share of the variance), norms stored
    apart. A table whose variance sits in fewer directions than it has columns (word
    vectors) then spends its codes where the variance is."""

    def codecs(self, mix, n_rows, n_features):
        dtype, unit = _float_dtype(mix), mix.ratio_unit
        # While the mix fits, its budget for the rows it codes (less the index of
        # repeated rows stored once); else the whole table's.
        budget = getattr(mix, "_fit_budget", None)
        if budget is None:
            budget = n_rows * n_features * (4 if unit == "bytes" else 1) / mix.ratio
        codecs = []
        for b in sorted({int(b) for b in mix.projected_block_sizes if 0 < int(b)}):
            fitting = None
            for k in range(b, n_features, b):
                latent = ProductCodec(b, MAX_CENTROIDS, dtype, _PROJECTED_KMEANS_ITER)
                codec = NormScaledCodec(ProjectionCodec(k, latent, dtype), _norm_dtype(mix))
                size = codec.row_size(n_features).in_unit(unit) * n_rows
                if size + codec.fixed_size(n_rows, n_features).in_unit(unit) > budget:
                    break
                fitting = codec
            if fitting is not None:
                codecs.append(fitting)
        return codecs

    def fit(self, codecs, rows, weight, generator, *, warm=False):
        if not codecs:
            return
        directions = unit_rows(rows)[0]
        for codec in codecs:
            codec.inner.fit(
                directions,
                torch.from_numpy(weight),
                generator,
                max_points_per_centroid=_KMEANS_POINTS_PER_VALUE
                * codec.inner.latent.block_size,
            )

    def refine(self, codecs, rows, weight, generator):
        self.fit(codecs, rows, weight, generator)  # the basis too, on every row

    # A refit fits the codebooks again on the projections of the rows that chose
    # them; the basis stays, and the codebooks' blocks with it.
    refit_iter = _PROJECTED_REFIT_ITER

    def distances(self, codec, rows):
        return CandidateFamily.distances(self, codec, rows)

    def _quantizer(self, codec):
        return codec.inner.latent

    def _quantized_rows(self, codec, directions):
        return directions @ codec.inner.components.to(directions.device).T

    def learned(self, codecs):
        return {}


register_candidates("exact", ExactFamily())
register_candidates("scalar", ScalarFamily())
register_candidates("product", ProductFamily())
register_candidates("low_rank", LowRankFamily())
register_candidates("projected_product", ProjectedProductFamily())


def measure(codec, family, rows, unit, n_rows):
    """A :class:`Candidate`: the codec's costs in ``unit`` and every row's distance."""
    n_features = rows.shape[1]
    if codec.lossless:
        distance, codes = np.zeros(rows.shape[0]), None
    else:
        distance, codes = family.distances(codec, rows)
    return Candidate(
        codec,
        family,
        codec.row_size(n_features).in_unit(unit),
        codec.fixed_size(n_rows, n_features).in_unit(unit),
        distance,
        codes,
    )
