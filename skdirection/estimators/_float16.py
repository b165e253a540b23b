"""Whether a table's magnitudes suit the float16 numbers a compressor stores.

Scales, offsets, norms and codebooks stored in float16 range up to
:data:`FLOAT16_MAX` and lose significant bits below ``2**-14`` (none is left below
``6e-8``). A table outside that range would decode to infinities or to zero rows, so
it is refused with the remedy, never compressed silently wrong. Directions do not
change when a whole table is multiplied by a constant, so rescaling it is always a
remedy.
"""

import numpy as np

FLOAT16_MAX = 65504.0
# float16 keeps 11 significant bits down to 2**-14, 8 at 2**-17 and none below 2**-24.
FLOAT16_TINY = 2.0**-17
_NORM_CHUNK_VALUES = 1 << 22  # float64 squares taken at once: 32 MB


def check_float16_magnitudes(X, stores, remedy, *, kind):
    """Raise ``ValueError`` when float16 cannot store what ``X`` needs.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features)
        Finite values.
    stores : str
        What is stored in float16, for the message (e.g. ``"scales"``).
    remedy : str
        What the user can change besides rescaling ``X``, or ``""``.
    kind : {"values", "ranges", "norms"}
        What float16 holds: values (or their averages), ranges of values (at most
        twice the largest value), or row norms.
    """
    if not X.size:
        return
    largest = max(float(X.max()), -float(X.min()))  # np.abs would copy the table
    rescale = "multiply X by a constant (directions do not change)"
    advice = f"{remedy}, or {rescale}" if remedy else rescale
    magnitude, what = largest, "absolute value"
    limit = FLOAT16_MAX / 2 if kind == "ranges" else FLOAT16_MAX
    if kind == "norms":
        what = "row norm"
        # largest <= the largest norm <= largest * sqrt(n_features): most tables need
        # no pass over their norms
        if largest < FLOAT16_TINY or largest * np.sqrt(X.shape[1]) > limit:
            magnitude = _largest_row_norm(X)
    if 0 < magnitude < FLOAT16_TINY:
        raise ValueError(
            f"X's largest {what} is {magnitude:.3g}, below {FLOAT16_TINY:.3g} (2**-17): "
            f"float16 {stores} this small keep few significant bits, and round to zero "
            f"below 6e-08; {advice}."
        )
    if magnitude > limit:
        raise ValueError(
            f"X's largest {what} is {magnitude:.4g}, too large for float16 {stores} "
            f"(at most {limit:g}); {advice}."
        )


def _largest_row_norm(X):
    rows = max(1, _NORM_CHUNK_VALUES // X.shape[1])
    parts = (X[start : start + rows] for start in range(0, len(X), rows))
    return max(
        float(np.sqrt(np.square(part, dtype=np.float64).sum(axis=1)).max())
        for part in parts
    )
