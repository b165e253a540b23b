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
    used = np.unique(assignment)
    return (
        row_costs[assignment].sum()
        + fixed_costs[used].sum()
        + partition_size(len(assignment), len(used)).n_bytes
    )


def assign(row_costs, fixed_costs, errors, budget):
    """Per-row codec indices minimising the summed ``errors`` within ``budget``.

    For a set of allowed codecs, a Lagrangian search over the price of a byte; codecs
    with a fixed cost (a codebook, a basis) are then dropped one at a time while that
    lowers the objective, since a codec chosen by few rows may cost more than it saves.

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

    def solve(allowed):
        if cost(choose(1e30, allowed)) > budget:
            return None
        for _ in range(4):
            lo, hi = -30.0, 30.0
            for _ in range(60):
                mid = (lo + hi) / 2
                if cost(choose(10**mid, allowed)) > budget:
                    lo = mid
                else:
                    hi = mid
            assignment = choose(10**hi, allowed)
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
    improved = True
    while improved:
        improved = False
        in_use = np.unique(best)
        for k in in_use[fixed_costs[in_use] > 0]:
            trial = solve(allowed[allowed != k])
            if trial is not None and objective(trial) < objective(best):
                best, allowed, improved = trial, allowed[allowed != k], True
                break
    return best
