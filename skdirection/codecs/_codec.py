"""The codec interface: how rows are learned, stored, measured and sized."""

import torch

from ._table import NOTHING


class Codec:
    """A way to store the rows of a table, in the spirit of faiss's quantizers.

    faiss's ``Quantizer`` trains, computes codes and decodes; here :meth:`fit` learns
    what the codec shares across rows (codebooks, a basis; nothing for scalar codes),
    :meth:`encode` stores rows as a :class:`CompressedTable` whose ``decode`` gives them
    back, and :meth:`row_size` and :meth:`fixed_size` say what that table stores, before
    anything is fitted. Every other part of the package (the estimators, the
    frequency-aware mix, the presets, the CLI and the benchmarks) asks a codec for its
    size and never re-derives it.

    Codecs work on float32 torch tensors of shape ``(n_rows, n_features)`` and keep
    what they learn as tensors; they know nothing of scikit-learn. A new codec is one
    subclass, and its table class registered with :func:`register_table`.

    Attributes
    ----------
    name : str
        Short name, e.g. ``"int4-g32"`` or ``"pq4"``.
    """

    name = "codec"

    def fit(self, rows, weight=None, generator=None):
        """Learn what the codec shares across rows.

        Parameters
        ----------
        rows : tensor of shape (n_rows, n_features)
        weight : tensor of shape (n_rows,) or None
            Non-negative row weights; heavier rows matter more.
        generator : torch.Generator or None
            Source of randomness (on the CPU).

        Returns
        -------
        self : Codec
        """
        return self

    def encode(self, rows):
        """The stored form of ``rows``: a :class:`CompressedTable`."""
        raise NotImplementedError

    def reconstruct(self, rows):
        """Rows with the directions the stored form of ``rows`` decodes to.

        What the mix measures cosine errors on; a codec may skip work that only changes
        lengths (a norm-scaled codec returns its inner codec's directions).
        """
        return self.encode(rows).decode()

    @property
    def lossless(self):
        """Whether decoding gives float32 rows back exactly."""
        return False

    def row_size(self, n_features):
        """:class:`StoredSize` of one row's own codes (and norm, scales...)."""
        raise NotImplementedError

    def fixed_size(self, n_rows, n_features):
        """:class:`StoredSize` of what is stored once for all ``n_rows`` rows
        (codebooks, a basis)."""
        return NOTHING

    def stored_size(self, n_rows, n_features):
        """:class:`StoredSize` of the table of ``n_rows`` rows."""
        return self.row_size(n_features) * n_rows + self.fixed_size(n_rows, n_features)

    def to(self, device):
        """Move what the codec learned (its tensors, and inner codecs') to ``device``."""
        for name, value in vars(self).items():
            if isinstance(value, (torch.Tensor, Codec)):
                setattr(self, name, value.to(device))
        return self

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r})"
