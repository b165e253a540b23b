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
    by few rows may cost more than it saves. Each codec with a fixed cost that is left
    unused is also tried alone with the codecs of none, and the best assignment
    kept.

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

    def bisect(allowed, near=None):
        """``(choose(10**hi, allowed), hi)`` at the end of a bisection of
        ``log10(lam)`` for the cheapest price within the budget, over ``[-30, 30]``,
        or over the decade either side of ``near`` when that brackets it (the price
        after one codec is dropped is near the price before). A row whose choice is
        the same at both ends of the interval keeps it inside (the difference of two
        codecs' objectives is linear in ``lam``), so only the others are recomputed,
        and the cost is updated by what they change: a narrow bracket leaves few.
        ``(None, near)`` when even the cheapest choices exceed the budget."""
        sub = np.ascontiguousarray(errors[:, allowed])
        costs, fixed = row_costs[allowed], fixed_costs[allowed]
        n_rows = len(sub)

        def cost_of(row_sum, counts):
            used = counts > 0
            return row_sum + fixed[used].sum() + partition_size(n_rows, used.sum()).n_bytes

        def ends(lam_exponent):
            at = np.argmin(sub + 10**lam_exponent * costs, axis=1)
            return at, costs[at].sum(), np.bincount(at, minlength=len(allowed))

        lo, hi = -30.0, 30.0
        if near is not None and -29.0 < near < 29.0:
            at_lo, lo_sum, lo_counts = ends(near - 1)
            if cost_of(lo_sum, lo_counts) > budget:
                lo = near - 1
            at_hi, hi_sum, hi_counts = ends(near + 1)
            if cost_of(hi_sum, hi_counts) <= budget:
                hi = near + 1
        if lo == -30.0:
            at_lo = ends(lo)[0]
        if hi == 30.0:
            at_hi, hi_sum, hi_counts = ends(hi)
            if cost_of(hi_sum, hi_counts) > budget:
                return None, near
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
        return allowed[at_hi], hi

    def solve(allowed, near=None):
        """``(assignment, log10 of its price)``, or ``(None, near)`` when even the
        cheapest codecs exceed the budget."""
        for _ in range(4):
            assignment, near = bisect(allowed, near)
            if assignment is None:
                return None, near
            now_used = np.unique(assignment)
            if len(now_used) == len(allowed):
                break
            allowed = now_used
        return assignment, near

    def objective(assignment):
        return errors[np.arange(len(assignment)), assignment].sum()

    allowed = np.arange(len(row_costs))
    best, price = solve(allowed)
    while best is None:
        dear = allowed[fixed_costs[allowed] > 0]
        if not dear.size:
            break
        allowed = allowed[allowed != dear[np.argmax(fixed_costs[dear])]]
        best, price = solve(allowed)
    if best is not None:
        best, price = _descend(best, price, allowed, solve, objective, fixed_costs)
    # Dropping codecs one at a time cannot turn codecs that share the rows into one
    # codec that all rows take and whose fixed cost alone pays (on spaCy's vectors at
    # 16x, every row coded, blocks of 4 and 8 into a projection): each codec with a
    # fixed cost is also tried alone, with those of none.
    free = np.flatnonzero(fixed_costs == 0)
    in_use = np.unique(best) if best is not None else free[:0]
    for k in np.setdiff1d(np.flatnonzero(fixed_costs > 0), in_use):
        alone = np.union1d(free, [k])
        if best is not None:
            # Lagrangian duality: at any price, no assignment of these codecs within
            # the budget has a lower objective than this; most trials end here.
            lam = 10.0**price
            bound = np.min(errors[:, alone] + lam * row_costs[alone], axis=1).sum()
            if bound - lam * (budget - fixed_costs[k]) >= objective(best):
                continue
        trial = solve(alone)[0]
        if trial is not None and (best is None or objective(trial) < objective(best)):
            best = trial
    if best is None:
        raise BudgetUnreachable(cost(choose(1e30, np.arange(len(row_costs)))))
    return best


def _descend(best, price, allowed, solve, objective, fixed_costs):
    """From an assignment, drop codecs with a fixed cost while that lowers the
    objective; returns the assignment and the log10 of its price."""
    while True:
        # The codec whose removal lowers the objective most, rather than the first
        # that lowers it: the first depends on the codecs' order, and on SmolLM2's
        # table at 16x it could drop the codebooks that the best assignments share.
        in_use = np.unique(best)
        trials = [
            (*solve(allowed[allowed != k], price), k)
            for k in in_use[fixed_costs[in_use] > 0]
        ]
        trials = [trial for trial in trials if trial[0] is not None]
        trial, trial_price, k = min(
            trials, key=lambda t: objective(t[0]), default=(None, None, None)
        )
        if trial is None or objective(trial) >= objective(best):
            return best, price
        best, price, allowed = trial, trial_price, allowed[allowed != k]
