"""Frequency-aware mixed budgets: each row gets the codec its weight pays for."""

import dataclasses
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ..._engine.backend import float32_rows, resolve_device, torch_generator
from ..._engine.progress import progress_bar
from ...codecs import (
    DeduplicatedTable,
    PartitionedTable,
    distinct_rows,
    index_size,
    rows_repeat,
)
from ...codecs.scalar import SUPPORTED_BITS
from .._base import TableCompressor
from .._float16 import check_float16_magnitudes
from ._budget import BudgetUnreachable, assign, total_cost
from ._candidates import CANDIDATE_FAMILIES, measure
from ._screen import screened_codecs

# Tables of at least _SCREEN_FRACTION * _SCREEN_MIN_ROWS rows screen their candidates on
# a sample of rows, 1 in _SCREEN_FRACTION, at most _SCREEN_MAX_ROWS.
_SCREEN_FRACTION = 8
_SCREEN_MIN_ROWS = 4096
_SCREEN_MAX_ROWS = 16384


class _RatioUnreachable(ValueError):
    """No assignment of the candidates fits the budget (the message says why)."""


class FrequencyMixedCompressor(TableCompressor):
    """Give every row of a table the codec its frequency pays for, within a budget.

    Candidate codecs per row: exact (float16 under a bytes budget, float32 under a
    parameters budget), scalar quantization at each of ``bits`` and each of
    ``group_sizes``, product quantization of the unit direction in blocks of each of
    ``block_sizes`` (one-byte codes into frequency-weighted k-means codebooks, see
    :class:`ProductQuantizer`), the same in blocks of each of ``projected_block_sizes``
    on the principal directions the budget pays for (none by default), and low-rank
    codes of each of ``ranks`` over a frequency-weighted basis of the unit directions.
    Product-quantized and low-rank rows store their norm apart (Banaei et al., 2023);
    under a bytes budget low-rank rows have int8 latent codes. Each row's cosine
    distance under each codec is measured, and the assignment minimising the
    ``sample_weight``-weighted sum of distances subject to the budget is found by a
    Lagrangian search (a multiple-choice knapsack). The low-rank basis and the
    codebooks are then refitted on the rows assigned to them and the assignment
    redone.

    Each candidate is fitted once: one basis serves every rank, the unit rows are made
    once for every block size, and the first k-means of a block size runs a few
    iterations on a weighted sample, enough to rank the codecs; the codebooks that rows
    chose are refitted on all of those rows, the first assignment of each refit taken
    from the codes its rows got when the codec was measured. Only the codecs refitted
    are measured again, and the refits stop once the assignment stops changing.

    A table of 32768 rows or more first screens the candidates on a sample of its rows
    (one in eight, at most 16384): every candidate is fitted and measured there and
    the budget solved for the sample. A candidate with codebooks or a basis is dropped
    unless the sample's best assignment uses it, or an assignment within 0.5% of the
    best that adds it or swaps it for one in use; a candidate without such a fixed cost
    is dropped unless the sample takes it at up to twice the budget (once the codebooks
    are refitted, a byte costs less). The cheapest candidate always stays. The others
    are fitted on the table starting from their codebooks. On SmolLM2's table at 16x,
    product quantization in blocks of 2 and of 16, int2, int3 and three ranks drop out,
    and the fit takes about 25% less time for the same weighted error.

    Rows that repeat exactly are coded once when that pays (``deduplicate``): the
    distinct rows are fitted, each weighing what its copies weigh together, and a
    bit-packed index a row maps every row to its distinct row
    (:class:`~skdirection.DeduplicatedTable`).

    Everything stored is counted against the budget: codes, scales, offsets, latent
    tables, decoders, norms, the per-row part ids and the index of repeated rows.

    The assignment belongs to the rows of the fitted table, so :meth:`compress` and
    :meth:`score` take that same table (same number of rows).

    Parameters
    ----------
    ratio : float, default=8.0
        Target compression ratio: original float32 size over stored size.
    ratio_unit : {"bytes", "params"}, default="bytes"
        Whether ``ratio`` counts bytes, or parameters (the paper's metric; then every
        codec stores float32 and scalar quantization is not a candidate). Under a
        bytes budget the float16 values, scales and norms refuse tables whose values
        exceed 32752 or norms 65504, or whose values all lie below ``2**-17``.
    bits : tuple of int, default=(8, 4, 3, 2)
        Bit widths of the scalar-quantization candidates (each in 8, 4, 3, 2).
    group_sizes : tuple of int or None, default=(None, 32)
        Group sizes of the scalar candidates, each with every one of ``bits``
        (``None``: one scale and offset per row). Small groups cost 32 bits of scale and
        offset per group but follow the values closely, which matters at 2 and 3 bits.
    block_sizes : tuple of int, default=(2, 4, 8, 16)
        Block sizes of the product-quantization candidates (256 codebook vectors a
        block); those not below ``n_features`` are skipped. Under a parameters budget
        a one-byte code counts as one parameter, and codebooks and norms are float32.
    ranks : tuple of int, default=(16, 32, 64, 128)
        Ranks of the low-rank candidates; those not below ``n_features`` are skipped.
    projected_block_sizes : tuple of int, default=()
        Block sizes of the projected product-quantization candidates: the unit
        directions projected on as many of their weighted principal directions as the
        budget pays for when every row takes the codec, the projections quantized in
        blocks (see ``n_components`` of :class:`ProductQuantizer`). For a table
        searched by cosine, where the rows' own principal directions are what the
        queries read: on spaCy's word vectors (every row coded, ``deduplicate=False``),
        ``(4,)`` keeps a 10-NN overlap of 0.786 at 16x fewer bytes and 0.643 at 32x,
        where the mix without it keeps 0.719 and 0.501. Not for a model's embedding: a
        model reads every direction, and the directions left out cost every row. On
        SmolLM2-135M without token counts at 16x, it took every row for a lower cosine
        distance and multiplied perplexity by 11.8 (input) where product quantization
        in blocks of 4 (15.2x) gives 1.18.
    keep_norms : bool, default=True
        Whether the candidates that code unit directions (product quantization, low
        rank, projected product quantization) store each row's norm (2 bytes under a
        bytes budget). ``False`` for a table searched by cosine, where lengths are never
        read: those rows then decode to unit length (up to their codes' error), and
        the bytes go to the codes. The exact and scalar candidates keep lengths either
        way.
    deduplicate : bool, default=True
        Whether rows that repeat exactly are stored once. Done when the bytes (or
        values) the repeated rows would take at the budget's mean cost per row exceed
        the index, ``ceil(log2(n_distinct))`` bits a row; a table without repeated rows
        is fitted as it is. On spaCy's ``en_core_web_md`` vectors, where 10112 of the
        20000 rows are distinct, searched by cosine (``projected_block_sizes=(2, 4)``,
        ``keep_norms=False``, seeds 0 to 2), the 10-NN overlap is 0.981 at 8x fewer
        bytes, 0.872 at 16x and 0.685 to 0.753 at 32x, where coding every row keeps
        0.897 to 0.901, 0.788 to 0.794 and 0.649 to 0.662.
    n_refits : int, default=2
        Most times the low-rank basis and the codebooks are refitted on the rows
        assigned to them (each refit followed by a new assignment); the refits stop
        once an assignment no longer changes. On SmolLM2-135M at 16x fewer bytes (token
        counts from news and Wikipedia, perplexity on Hamlet, seeds 0 to 2), two
        refits gave x1.080 (input) and x1.58 (tied input and head) where one gave
        x1.094 and x1.85, for 10% to 30% more fitting time; at 8x they changed nothing
        beyond the seeds' spread.
    weight_power : float, default=0.5
        ``sample_weight`` is raised to this power before the assignment. Token counts
        from one corpus overstate how much another text relies on its most frequent
        rows; on SmolLM2-135M (counts from news and Wikipedia, perplexity on Hamlet)
        the square root beat raw counts at 8x, 10x and 16x fewer bytes (perplexity
        x1.021 against x1.057, x1.102 against x1.181, x1.54 against x1.74, measured
        before product quantization joined the candidates). ``1`` uses the weights as
        given.
    weight_floor : float, default=0.5
        Every row weighs at least ``weight_floor`` times the smallest positive
        ``sample_weight`` (before ``weight_power``). With token counts a row the
        counting text never saw then counts as half a sighting, not as nothing: a
        token absent from one text still occurs in the next, and a zero weight would
        hand its row the cheapest codec. On SmolLM2-135M with raw counts from another
        text, rows of weight zero cost x1.34 in perplexity at 8x fewer bytes, where
        the same counts plus one half cost x1.0045. ``0`` lets rows of weight zero
        take the cheapest codec.
    device : str, default="auto"
        Torch device of the fit (k-means, candidate errors, basis): ``"auto"`` (CUDA
        when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. Rows are processed in
        chunks, so a 262144 x 640 table fits; the fitted codecs are kept on the CPU.
        The budget search runs on the CPU, over one measured error a row and codec: most
        of its steps touch the few rows whose choice is still open.
    random_state : int, RandomState instance or None, default=None
        Seeds the starting centroids of the codebooks' k-means.
    verbose : int, default=0
        Show a progress bar over the fit's stages: the candidates fitted, each one
        measured, the assignment and each refit.

    Attributes
    ----------
    codecs_ : list of str
        Names of the candidate codecs, e.g. ``"exact"``, ``"int4"`` (one scale per row),
        ``"int3-g32"`` (one per 32 values), ``"pq4"`` (blocks of 4), ``"rank32"``;
        those the screen dropped are not among them.
    screened_out_ : list of str
        Names of the candidates the screen dropped (empty on tables too small to
        screen).
    assignment_ : ndarray of shape (n_rows_,)
        Index into ``codecs_`` of each row's codec.
    components_ : ndarray of shape (max_rank, n_features) or None
        Basis of the low-rank candidates.
    codebooks_ : dict of int to ndarray of shape (n_blocks, n_centroids, block_size)
        Codebooks of the product-quantization candidates, by block size.
    weighted_cosine_distance_ : float
        Mean cosine distance of the fitted assignment, rows weighted by the floored
        ``sample_weight ** weight_power``.
    stored_size_ : int
        Stored bytes (or parameters, with ``ratio_unit="params"``) of the table.
    ratio_ : float
        Achieved ratio in ``ratio_unit``.
    device_ : str
        Device the fit ran on.
    n_refits_ : int
        Refits run (at most ``n_refits``; fewer when an assignment stopped changing).
    n_rows_ : int
        Rows of the fitted table.
    n_distinct_rows_ : int
        Rows coded: the distinct rows when repeated rows are stored once (see
        ``deduplicate``), else ``n_rows_``.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    ScalarQuantizer : One bit width for every row.
    TruncatedSVDCompressor : One rank for every row.

    References
    ----------
    .. [1] K. Balazy et al. "Direction is what you need", RepL4NLP 2021. arXiv:2106.08181.
    .. [2] M. Banaei et al. "Revisiting offline compression: going beyond
       factorization-based methods for transformer language models", Findings of EACL
       2023.
    .. [3] P. Chen et al. "GroupReduce: block-wise low-rank approximation for neural
       language model shrinking", NeurIPS 2018.

    Examples
    --------
    >>> import numpy as np
    >>> from skdirection import FrequencyMixedCompressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(500, 64)).astype(np.float32)
    >>> counts = rng.zipf(1.5, size=500).astype(float)
    >>> mixed = FrequencyMixedCompressor(ratio=10, ranks=(8, 16))
    >>> mixed = mixed.fit(X, sample_weight=counts)
    >>> table = mixed.compress(X)
    >>> bool(X.nbytes / table.n_bytes >= 10)
    True
    >>> mixed.codecs_[:4]
    ['exact', 'int8-g32', 'int8', 'int4-g32']
    """

    _parameter_constraints = {
        "ratio": [Interval(Real, 1, None, closed="neither")],
        "ratio_unit": [StrOptions({"bytes", "params"})],
        "bits": ["array-like"],
        "group_sizes": ["array-like"],
        "block_sizes": ["array-like"],
        "ranks": ["array-like"],
        "projected_block_sizes": ["array-like"],
        "keep_norms": ["boolean"],
        "deduplicate": ["boolean"],
        "n_refits": [Interval(Integral, 0, None, closed="left")],
        "weight_power": [Interval(Real, 0, None, closed="left")],
        "weight_floor": [Interval(Real, 0, None, closed="left")],
        "device": [str],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        ratio=8.0,
        *,
        ratio_unit="bytes",
        bits=(8, 4, 3, 2),
        group_sizes=(None, 32),
        block_sizes=(2, 4, 8, 16),
        ranks=(16, 32, 64, 128),
        projected_block_sizes=(),
        keep_norms=True,
        deduplicate=True,
        n_refits=2,
        weight_power=0.5,
        weight_floor=0.5,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.ratio = ratio
        self.ratio_unit = ratio_unit
        self.bits = bits
        self.group_sizes = group_sizes
        self.block_sizes = block_sizes
        self.ranks = ranks
        self.projected_block_sizes = projected_block_sizes
        self.keep_norms = keep_norms
        self.deduplicate = deduplicate
        self.n_refits = n_refits
        self.weight_power = weight_power
        self.weight_floor = weight_floor
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    _fitted_marker = "assignment_"

    def _check_lists(self):
        for b in self.bits:
            if b not in SUPPORTED_BITS:
                raise ValueError(f"bits must hold values among {SUPPORTED_BITS}, got {b}.")
        for g in self.group_sizes:
            if g is not None and not (isinstance(g, Integral) and g >= 1):
                raise ValueError(
                    f"group_sizes must hold positive integers or None, got {g!r}."
                )
        for name in ("block_sizes", "projected_block_sizes"):
            for b in getattr(self, name):
                if not (isinstance(b, Integral) and b >= 1):
                    raise ValueError(f"{name} must hold positive integers, got {b!r}.")

    def _row_weight(self, sample_weight, X):
        """Floored, tempered weights, normalised to mean one."""
        n = X.shape[0]
        weight = self._check_sample_weight(sample_weight, X)
        if weight is None:
            return np.ones(n)
        if weight.sum() <= 0:
            raise ValueError("sample_weight must be finite with a positive sum.")
        weight = np.maximum(weight, self.weight_floor * weight[weight > 0].min())
        weight = np.where(weight > 0, weight**self.weight_power, 0.0)
        return weight / weight.sum() * n  # divided first: n / sum overflows if subnormal

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None):
        """Choose each row's codec for the budget ``ratio``.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)
            The table to compress.
        y : None
            Ignored.
        sample_weight : array-like of shape (n_rows,), default=None
            Row weights, typically token counts over a corpus; rows of weight zero are
            floored (see ``weight_floor``).

        Returns
        -------
        self : object
            The fitted estimator.
        """
        self._check_lists()
        X = self._validate_rows(X, reset=True)
        self._check_magnitudes(X)
        row_weight = self._row_weight(sample_weight, X)
        n, d = X.shape
        device = resolve_device(self.device)
        original = n * d * (4 if self.ratio_unit == "bytes" else 1)
        budget = original / self.ratio
        first, row_index, index_cost = self._distinct(X, budget)
        try:
            try:
                fitted = self._fit_rows(
                    X, row_weight, first, row_index, budget - index_cost, device
                )
            except _RatioUnreachable:
                if first is None:
                    raise
                # The index left too little beside the codecs' fixed costs (a basis,
                # codebooks): code every row.
                first, row_index, index_cost = None, None, 0
                fitted = self._fit_rows(X, row_weight, None, None, budget, device)
        except _RatioUnreachable as unreachable:
            raise ValueError(str(unreachable)) from None
        families, candidates, assignment, weight = fitted

        self._candidate_codecs = [c.codec.to("cpu") for c in candidates]
        self._distinct_first, self._row_index = first, row_index
        self.device_ = str(device)
        self.codecs_ = [c.name for c in candidates]
        for family, codecs in families:
            for name, value in family.learned(codecs).items():
                setattr(self, name, value)
        errors = np.stack([c.distance for c in candidates], axis=1)[
            np.arange(len(assignment)), assignment
        ]
        self.weighted_cosine_distance_ = float(np.average(errors, weights=weight))
        self.stored_size_ = int(self._cost(candidates, assignment) + index_cost)
        self.ratio_ = original / self.stored_size_
        self.n_rows_ = n
        self.n_distinct_rows_ = len(assignment)
        self.assignment_ = assignment if first is None else assignment[row_index]
        return self

    def _fit_rows(self, X, row_weight, first, row_index, budget, device):
        """Fit the candidates and assign them to the rows of ``X`` (to its distinct
        rows ``first`` when given, each weighing its copies' ``row_weight``) within
        ``budget``; returns ``(families, candidates, assignment, weight)``, or raises
        :class:`_RatioUnreachable`."""
        d = X.shape[1]
        rows = float32_rows(X if first is None else X[first], device)
        weight = (
            row_weight
            if first is None
            else np.bincount(row_index, weights=row_weight, minlength=len(first))
        )
        generator = torch_generator(check_random_state(self.random_state), "cpu")
        self._fit_budget = budget  # read by the families while they make their codecs
        try:
            families = [
                (family, family.codecs(self, rows.shape[0], d))
                for family in CANDIDATE_FAMILIES.values()
            ]
        finally:
            del self._fit_budget
        n_codecs = sum(len(codecs) for _, codecs in families)
        self.n_refits_ = 0
        with progress_bar(
            total=2 * n_codecs + 1 + self.n_refits,
            desc=type(self).__name__,
            verbose=self.verbose,
        ) as bar:
            families, self.screened_out_ = self._fit_candidates(
                families, rows, weight, budget, generator
            )
            bar.update(n_codecs)
            candidates = self._measure(families, rows, bar)
            bar.update(len(self.screened_out_))
            assignment = self._assign(candidates, weight, budget)
            bar.update()
            for _ in range(self.n_refits):
                candidates, assignment, changed = self._refit(
                    families, candidates, assignment, rows, weight, budget, generator
                )
                self.n_refits_ += 1
                bar.update()
                if not changed:
                    break
        return families, candidates, assignment, weight

    def _distinct(self, X, budget):
        """``(first, row_index, index_cost)`` of the rows to code once when storing
        repeated rows once pays (see ``deduplicate``), else ``(None, None, 0)``."""
        if not self.deduplicate:
            return None, None, 0
        n = X.shape[0]
        first, row_index = distinct_rows(np.asarray(X, dtype=np.float32))
        index_cost = index_size(n, len(first)).in_unit(self.ratio_unit)
        if (n - len(first)) * budget / n <= index_cost:
            return None, None, 0
        return first, row_index, index_cost

    def _fit_candidates(self, families, rows, weight, budget, generator):
        """Fit the candidates, screened on a sample of rows first when the table is
        large enough; returns the families with the codecs kept and the names of those
        dropped."""
        n = rows.shape[0]
        m = min(n // _SCREEN_FRACTION, _SCREEN_MAX_ROWS)
        if m < _SCREEN_MIN_ROWS:
            for family, codecs in families:
                family.fit(codecs, rows, weight, generator)
            return families, []
        sample = torch.randperm(n, generator=generator)[:m].sort().values
        sample_rows, sample_weight = rows[sample.to(rows.device)], weight[sample.numpy()]
        screen = []  # the sample bears its share of the budget and of the fixed costs
        for family, codecs in families:
            family.fit(codecs, sample_rows, sample_weight, generator)
            for codec in codecs:
                candidate = measure(codec, family, sample_rows, self.ratio_unit, n)
                screen.append(
                    dataclasses.replace(candidate, fixed_cost=candidate.fixed_cost * m / n)
                )
        kept = screened_codecs(
            self._weighted_errors(screen, sample_weight),
            [c.row_cost for c in screen],
            [c.fixed_cost for c in screen],
            budget * m / n,
        )
        kept = {id(screen[k].codec) for k in kept}
        dropped = [c.name for c in screen if id(c.codec) not in kept]
        families = [(f, [c for c in codecs if id(c) in kept]) for f, codecs in families]
        for family, codecs in families:
            family.refine(codecs, rows, weight, generator)
        return families, dropped

    def _measure(self, families, rows, bar):
        """Every codec of every family as a :class:`Candidate`, the most bytes a row
        first."""
        n = rows.shape[0]
        candidates = []
        for family, codecs in families:
            for codec in codecs:
                candidates.append(measure(codec, family, rows, self.ratio_unit, n))
                bar.update()
        return sorted(candidates, key=lambda c: -c.row_cost)

    def _refit(self, families, candidates, assignment, rows, weight, budget, generator):
        """Refit the codecs on the rows that chose them and assign again; ``changed``
        is whether the assignment moved."""
        refitted = []
        for family, codecs in families:
            indices = [self._index(candidates, c) for c in codecs]
            members = [assignment == i for i in indices]
            codes = [candidates[i].codes for i in indices]
            # A family that keeps no codes may predate the argument.
            known = {"codes": codes} if any(c is not None for c in codes) else {}
            changed = family.refit(codecs, rows, weight, members, generator, **known)
            refitted.extend(codecs if changed is True else changed or [])
        if not refitted:
            return candidates, assignment, False
        n = rows.shape[0]
        candidates = [
            measure(c.codec, c.family, rows, self.ratio_unit, n)
            if any(c.codec is codec for codec in refitted)
            else c
            for c in candidates
        ]
        new = self._assign(candidates, weight, budget)
        return candidates, new, not np.array_equal(new, assignment)

    @staticmethod
    def _index(candidates, codec):
        return next(i for i, c in enumerate(candidates) if c.codec is codec)

    @staticmethod
    def _cost(candidates, assignment):
        return total_cost(
            np.array([c.row_cost for c in candidates], dtype=np.float64),
            np.array([c.fixed_cost for c in candidates], dtype=np.float64),
            assignment,
        )

    @staticmethod
    def _weighted_errors(candidates, weight):
        return np.stack([c.distance for c in candidates], axis=1) * weight[:, None]

    def _assign(self, candidates, weight, budget):
        try:
            return assign(
                [c.row_cost for c in candidates],
                [c.fixed_cost for c in candidates],
                self._weighted_errors(candidates, weight),
                budget,
            )
        except BudgetUnreachable as unreachable:
            raise _RatioUnreachable(
                f"ratio={self.ratio} cannot be reached: the cheapest candidates store "
                f"{unreachable.cheapest:.0f} {self.ratio_unit} against a budget of "
                f"{budget:.0f}; add smaller ranks or lower the ratio."
            ) from None

    def _check_magnitudes(self, X):
        if self.ratio_unit == "bytes":  # float16 values, scales and norms
            check_float16_magnitudes(X, "values and scales", "", kind="ranges")
            if self.keep_norms:
                check_float16_magnitudes(X, "norms", "", kind="norms")

    def compress(self, X):
        """The stored table of ``X``, the table that was fitted.

        Parameters
        ----------
        X : array-like of shape (n_rows_, n_features)

        Returns
        -------
        table : PartitionedTable or DeduplicatedTable
            One part per codec in use, inside a :class:`~skdirection.DeduplicatedTable`
            when repeated rows are stored once; ``table.n_bytes`` (or
            ``n_parameters``) is ``stored_size_``.
        """
        check_is_fitted(self)
        X = self._validate_rows(X, reset=False)
        if X.shape[0] != self.n_rows_:
            raise ValueError(
                f"X has {X.shape[0]} rows but the codecs were assigned to the "
                f"{self.n_rows_} rows of the fitted table."
            )
        self._check_magnitudes(X)
        # Estimators fitted before repeated rows were stored once code every row.
        first = getattr(self, "_distinct_first", None)
        row_index = getattr(self, "_row_index", None)
        assignment = self.assignment_
        if first is not None:
            if not rows_repeat(np.asarray(X, dtype=np.float32), first[row_index]):
                raise ValueError(
                    "X is not the fitted table: rows that were equal when it was "
                    "fitted, and are stored once, now differ."
                )
            X, assignment = X[first], assignment[first]
        rows = float32_rows(X)
        used = np.unique(assignment)
        parts = [
            self._candidate_codecs[k].encode(rows[torch.from_numpy(assignment == k)])
            for k in used
        ]
        remap = np.full(len(self.codecs_), -1)
        remap[used] = np.arange(len(used))
        table = PartitionedTable(parts, torch.from_numpy(remap[assignment]))
        return table if first is None else DeduplicatedTable(table, row_index)
