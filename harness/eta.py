"""Time left in a speed sweep, from the cost model and what this run has measured so far.

Groups differ by orders of magnitude (a ``dau_gauss`` paper group against a small ``acu`` one), so
"elapsed per group x groups left" misleads.  Each group to measure gets a predicted cost
(``bench.predicted_cost``: the multiply-accumulates its backends and baselines do, from
``costmodel``); the groups measured so far give seconds per unit of predicted cost; a group
left is estimated as its cost at that rate, at least the shortest group seen (the fixed
overhead of a group: first calls, warm-up) and, with a budget, at most the budget (``bench``
stops a group's repetitions there).  Before the first group there is no rate: only the bound
"groups x budget" is said, never a made-up figure.  No torch here.
"""

MIN_REPS = 3  # repetitions a group keeps whatever its budget (``timing.interleaved``): a median and a spread


class Eta:
    """``Eta(costs, budget_s)``: ``costs[i]`` the predicted cost of the i-th group to measure."""

    def __init__(self, costs, budget_s=None):
        self.costs, self.budget_s = list(costs), budget_s
        self.seconds = []  # of the groups measured so far, in order

    def record(self, seconds):
        """The next group took ``seconds``."""
        self.seconds.append(seconds)

    def rate(self):
        """Seconds per unit of predicted cost measured so far, or None before the first group."""
        done = self.costs[: len(self.seconds)]
        return sum(self.seconds) / sum(done) if self.seconds and sum(done) > 0 else None

    def group(self, i):
        """Estimated seconds of group ``i`` (not yet measured), or None before the first group."""
        rate = self.rate()
        if rate is None:
            return None
        est = max(rate * self.costs[i], min(self.seconds))
        return min(est, self.budget_s) if self.budget_s is not None else est

    def left(self):
        """Estimated seconds of the groups not yet measured, or None before the first group."""
        est = [self.group(i) for i in range(len(self.seconds), len(self.costs))]
        return None if any(e is None for e in est) else sum(est)

    def bound(self):
        """Seconds the groups left may take at most (groups x budget; a group whose minimum is
        longer than its budget overruns it, and says so), or None without a budget."""
        return None if self.budget_s is None else (len(self.costs) - len(self.seconds)) * self.budget_s


def over_budget(rows):
    """One line saying that a group overran its budget and why, or None."""
    b = next((r.get("budget") for r in rows if r.get("budget")), None)
    if not b or not b.get("over"):
        return None
    why = (
        f"one {b['slowest']} call takes {b['slowest_call_s']:.1f} s and {MIN_REPS} repetitions are the minimum"
        if b.get("slowest")
        else "its first calls alone took longer"
    )
    return f"over budget: {b['spent_s']:.1f} s > {b['budget_s']:g} s ({why})"
