"""The budget solver of the frequency-aware mix: a multiple-choice knapsack, solved by a
Lagrangian search over the price of a stored byte."""

import numpy as np

from ...codecs import partition_size


class BudgetUnreachable(ValueError):
    """No assignment fits the budget; ``cheapest`` is the smallest total found."""

    def __init__(self, cheapest):
        super().__init__(cheapest)
        self.cheapest = cheapest


def total_cost(row_costs, fixed_costs, assignment):
    """Stored size of an assignment: every row's codes, the fixed cost of every codec
    in use, and the bit-packed part id of every row."""
    used = np.flatnonzero(np.bincount(assignment, minlength=len(fixed_costs)))
    return (
        row_costs[assignment].sum()
        + fixed_costs[used].sum()
        + partition_size(len(assignment), len(used)).n_bytes
    )


def assign(row_costs, fixed_costs, errors, budget):
    """Per-row codec indices minimising the summed ``errors`` within ``budget``.

    For a set of allowed codecs, a Lagrangian search over the price of a byte; codecs
    with a fixed cost (a codebook, a basis) are then dropped one at a time, each time
    the one whose removal lowers the objective most, while one does: a codec chosen
    by few rows may cost more than it saves.

    Parameters
    ----------
    row_costs, fixed_costs : ndarray of shape (n_codecs,)
    errors : ndarray of shape (n_rows, n_codecs)
        Weighted error of every row under every codec.
    budget : float

    Returns
    -------
    assignment : ndarray of shape (n_rows,)

    Raises
    ------
    BudgetUnreachable
        When even the cheapest codec of every row exceeds the budget.
    """
    row_costs = np.asarray(row_costs, dtype=np.float64)
    fixed_costs = np.asarray(fixed_costs, dtype=np.float64)

    def cost(assignment):
        return total_cost(row_costs, fixed_costs, assignment)

    def choose(lam, allowed):
        objective = errors[:, allowed] + lam * row_costs[allowed]
        return allowed[np.argmin(objective, axis=1)]

    def bisect(allowed):
        """``choose(10**hi, allowed)`` at the end of a bisection of ``log10(lam)`` over
        ``[-30, 30]`` for the cheapest price within the budget. A row whose choice is
        the same at both ends of the interval keeps it inside (the difference of two
        codecs' objectives is linear in ``lam``), so only the others are recomputed,
        and the cost is updated by what they change."""
        sub = np.ascontiguousarray(errors[:, allowed])
        costs, fixed = row_costs[allowed], fixed_costs[allowed]
        n_rows = len(sub)

        def cost_of(row_sum, counts):
            used = counts > 0
            return row_sum + fixed[used].sum() + partition_size(n_rows, used.sum()).n_bytes

        lo, hi = -30.0, 30.0
        at_lo = np.argmin(sub + 10**lo * costs, axis=1)
        at_hi = np.argmin(sub + 10**hi * costs, axis=1)
        hi_sum = costs[at_hi].sum()
        hi_counts = np.bincount(at_hi, minlength=len(allowed))
        open_rows = np.flatnonzero(at_lo != at_hi)
        for _ in range(60):
            mid = (lo + hi) / 2
            was = at_hi[open_rows]
            now = np.argmin(sub[open_rows] + 10**mid * costs, axis=1)
            mid_sum = hi_sum + costs[now].sum() - costs[was].sum()
            mid_counts = (
                hi_counts
                - np.bincount(was, minlength=len(allowed))
                + np.bincount(now, minlength=len(allowed))
            )
            if cost_of(mid_sum, mid_counts) > budget:
                lo = mid
                at_lo[open_rows] = now
            else:
                hi, hi_sum, hi_counts = mid, mid_sum, mid_counts
                at_hi[open_rows] = now
            open_rows = open_rows[at_lo[open_rows] != at_hi[open_rows]]
        return allowed[at_hi]

    def solve(allowed):
        if cost(choose(1e30, allowed)) > budget:
            return None
        for _ in range(4):
            assignment = bisect(allowed)
            now_used = np.unique(assignment)
            if len(now_used) == len(allowed):
                break
            allowed = now_used
        return assignment

    def objective(assignment):
        return errors[np.arange(len(assignment)), assignment].sum()

    allowed = np.arange(len(row_costs))
    best = solve(allowed)
    while best is None:
        dear = allowed[fixed_costs[allowed] > 0]
        if not dear.size:
            raise BudgetUnreachable(cost(choose(1e30, np.arange(len(row_costs)))))
        allowed = allowed[allowed != dear[np.argmax(fixed_costs[dear])]]
        best = solve(allowed)
    while True:
        # The codec whose removal lowers the objective most, rather than the first
        # that lowers it: the first depends on the codecs' order, and on SmolLM2's
        # table at 16x it could drop the codebooks that the best assignments share.
        in_use = np.unique(best)
        trials = [
            (trial, k)
            for k in in_use[fixed_costs[in_use] > 0]
            if (trial := solve(allowed[allowed != k])) is not None
        ]
        trial, k = min(trials, key=lambda t: objective(t[0]), default=(None, None))
        if trial is None or objective(trial) >= objective(best):
            return best
        best, allowed = trial, allowed[allowed != k]
