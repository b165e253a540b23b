"""The progress bar of every fit: tqdm's, shown only when the estimator is verbose."""

from tqdm.auto import tqdm


def progress_bar(iterable=None, *, total=None, desc=None, verbose=0):
    """A tqdm bar over ``iterable`` (or of ``total`` steps), silent at ``verbose=0`` and
    cleared once done."""
    return tqdm(iterable, total=total, desc=desc, disable=not verbose, leave=False)
