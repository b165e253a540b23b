"""The mix's screen: which candidate codecs a sample of rows says are worth fitting on
the whole table."""

import numpy as np

from ._budget import BudgetUnreachable, assign

# Assignments within this fraction of the best objective found count as ties: the
# screen's codebooks are fitted on the sample, so near-ties can go either way once
# they are refitted on the table. On SmolLM2's table at 32x, sets of product
# quantizers 0.1% to 0.4% apart on the sample ended 4.6% apart on the table.
TOLERANCE = 0.005
# Codecs without codebooks or a basis are kept when the sample chooses them under this
# many times the budget: once the codebooks are refitted, a byte costs less and the
# most weighted rows afford more (on SmolLM2's table at 32x, int3 and int4 for the most
# frequent rows, which the screen gave product quantization).
FREE_BUDGET_FACTOR = 2.0


def screened_codecs(errors, row_costs, fixed_costs, budget):
    """Indices of the codecs worth fitting on the whole table, by what the budget
    solver makes of a sample of its rows.

    Kept: the codecs of the best assignment of the sample and of every assignment
    within :data:`TOLERANCE` of it found by adding one unused codec with a fixed cost,
    or by swapping it for one in use; codecs without a fixed cost chosen at
    :data:`FREE_BUDGET_FACTOR` times the budget; and the codec with the cheapest rows,
    so that a budget the table can reach stays reachable.

    Parameters
    ----------
    errors : ndarray of shape (n_sampled_rows, n_codecs)
        Weighted error of every sampled row under every codec.
    row_costs, fixed_costs : ndarray of shape (n_codecs,)
        Fixed costs scaled to the sample, as ``budget`` is.
    budget : float

    Returns
    -------
    kept : ndarray of int
        Sorted; every codec when even the sample cannot meet the budget.
    """
    row_costs = np.asarray(row_costs, dtype=np.float64)
    fixed_costs = np.asarray(fixed_costs, dtype=np.float64)
    everything = set(range(len(row_costs)))
    free = {k for k in everything if fixed_costs[k] == 0}

    def solve(allowed, share=1.0):
        allowed = np.array(sorted(allowed))
        try:
            chosen = allowed[
                assign(
                    row_costs[allowed],
                    fixed_costs[allowed],
                    errors[:, allowed],
                    share * budget,
                )
            ]
        except BudgetUnreachable:
            return np.inf, set()
        return errors[np.arange(len(chosen)), chosen].sum(), set(np.unique(chosen).tolist())

    best = solve(everything)
    if not best[1]:
        return np.arange(len(row_costs))
    in_use = best[1] - free
    solutions = [best]
    for k in sorted(everything - free - in_use):
        solutions.append(solve(free | in_use | {k}))
        solutions.extend(solve(free | in_use - {j} | {k}) for j in sorted(in_use))
    lowest = min(objective for objective, _ in solutions)
    kept = set().union(
        *(used for objective, used in solutions if objective <= lowest * (1 + TOLERANCE))
    )
    kept |= solve(everything, FREE_BUDGET_FACTOR)[1] & free
    kept.add(int(np.argmin(row_costs)))
    return np.array(sorted(kept))
