"""What should we buy? Search hardware x GPU count x algorithm x batch x precision for one model and pick:

- the **fastest** configuration whose cost stays within the budget (any cost when there is no budget);
- the **cheapest** configuration that finishes by the deadline (any time when there is no deadline);
- the **Pareto front** of time to train vs cost: every configuration that no other beats on both.

Cost = price per GPU-hour x GPUs x time to train (``firesim.training.predict``); hardware without a price
cannot be costed, so it is never recommended (give it a price with ``--hardware-catalog``). Every configuration that is not a candidate says why, and the
reasons are summarised by region (hardware x reason) with the nearest miss, so a user sees
at a glance that, say, every H100 configuration is over budget by at least $3,100 and every K80 one over
the deadline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

from firesim.errors import UserError
from firesim.search.sweep import Case, Setting, check_cost, search_space, sweep

__all__ = ["DTYPES", "Recommendation", "analyse", "choose", "pareto_front", "recommend"]

DTYPES = ("fp32", "tf32", "bf16", "fp16")  # each GPU keeps those it has

NO_PRICE = "no price"
OVER_BUDGET = "over budget"
OVER_DEADLINE = "over deadline"
OVER_BOTH = "over budget and deadline"


@dataclass
class Recommendation:
    """The answer of ``recommend``: every record (with its verdict), the picks, the front and the regions."""

    records: list[dict]
    deadline_s: float | None
    budget_usd: float | None
    fastest: dict | None  # fastest within the budget
    cheapest: dict | None  # cheapest within the deadline
    pareto: list[dict]
    regions: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready: the picks, the front, the rejected regions and the counts (records on request)."""
        counts: dict[str, int] = {}
        for r in self.records:
            key = "candidate" if r["verdict"] is None else r["verdict"]
            counts[key] = counts.get(key, 0) + 1
        return {"deadline_s": self.deadline_s, "budget_usd": self.budget_usd, "configurations": len(self.records),
                "counts": counts, "fastest_within_budget": self.fastest, "cheapest_within_deadline": self.cheapest,
                "pareto": self.pareto, "rejected_regions": self.regions}


def pareto_front(records: Sequence[dict]) -> list[dict]:
    """Records not beaten on both time and cost by another, fastest first (ties: the cheaper, then the first)."""
    ranked = sorted(enumerate(records), key=lambda ir: (ir[1]["time_to_train_s"], ir[1]["cost"], ir[0]))
    front, best_cost = [], float("inf")
    for _, rec in ranked:
        if rec["cost"] < best_cost:
            front.append(rec)
            best_cost = rec["cost"]
    return front


def _verdict(rec: dict, deadline_s: float | None, budget_usd: float | None) -> str | None:
    """None for a candidate (meets every limit given), else why not."""
    if rec["status"] != "ok":
        return rec["reason"]
    if rec["cost"] is None:
        return NO_PRICE
    over_budget = budget_usd is not None and rec["cost"] > budget_usd
    over_deadline = deadline_s is not None and rec["time_to_train_s"] > deadline_s
    if over_budget and over_deadline:
        return OVER_BOTH
    return OVER_BUDGET if over_budget else OVER_DEADLINE if over_deadline else None


def _span(values) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"


def _regions(records: Sequence[dict]) -> list[dict]:
    """Rejected records grouped by hardware x reason: how many, over which precisions, GPU counts, batches
    and algorithms, and the nearest miss (the fastest and the cheapest of the group)."""
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        if rec["verdict"] is not None:
            groups.setdefault((rec["hardware"], rec["verdict"]), []).append(rec)
    regions = []
    for (hardware, reason), recs in groups.items():
        regions.append({
            "hardware": hardware, "reason": reason, "configurations": len(recs),
            "dtypes": list(dict.fromkeys(r["dtype"] for r in recs)),
            "gpus": _span([r["gpus"] for r in recs]), "batch": _span([r["batch"] for r in recs]),
            "algos": list(dict.fromkeys(r["algo"] for r in recs)),
            "min_time_to_train_s": min((r["time_to_train_s"] for r in recs if r.get("time_to_train_s") is not None),
                                       default=None),
            "min_cost": min((r["cost"] for r in recs if r.get("cost") is not None), default=None),
            "detail": recs[0].get("detail")})
    return regions


def analyse(records: list[dict], deadline_s: float | None, budget_usd: float | None) -> Recommendation:
    """Verdicts, picks, front and regions for evaluated records (``firesim.search.sweep``)."""
    for rec in records:
        rec["verdict"] = _verdict(rec, deadline_s, budget_usd)
    ok = [r for r in records if r["status"] == "ok"]
    priced = [r for r in ok if r["cost"] is not None]
    within_budget = priced if budget_usd is None else [r for r in priced if r["cost"] <= budget_usd]
    within_deadline = priced if deadline_s is None else [r for r in priced if r["time_to_train_s"] <= deadline_s]
    fastest = min(within_budget, key=lambda r: (r["time_to_train_s"], r["cost"]), default=None)
    cheapest = min(within_deadline, key=lambda r: (r["cost"], r["time_to_train_s"]), default=None)
    return Recommendation(records=records, deadline_s=deadline_s, budget_usd=budget_usd, fastest=fastest,
                          cheapest=cheapest, pareto=pareto_front(priced), regions=_regions(records))


def choose(setting: Setting, cases: Sequence[Case], *, deadline_s: float | None = None,
           budget_usd: float | None = None, executor: Executor | None = None,
           progress: Callable[[int], None] | None = None) -> Recommendation:
    """Evaluate ``cases`` (on ``executor``) and pick what to buy under ``deadline_s`` and ``budget_usd``."""
    if deadline_s is None and budget_usd is None:
        raise UserError("recommend: give a deadline, a budget or both")
    if deadline_s is not None and not deadline_s > 0:
        raise UserError(f"deadline: must be > 0, got {deadline_s!r}")
    if budget_usd is not None and not budget_usd > 0:
        raise UserError(f"budget: must be > 0 USD, got {budget_usd!r}")
    check_cost(setting, cases)
    records = sweep(setting, cases, executor=executor, progress=progress)
    return analyse(records, deadline_s, budget_usd)


def recommend(model: str, *, deadline_s: float | None = None, budget_usd: float | None = None,
              hardware: Sequence[str] | None = None, dtypes: Sequence[str] = DTYPES,
              executor: Executor | None = None, progress: Callable[[int], None] | None = None,
              **space) -> Recommendation:
    """What to buy for training ``model`` (a zoo name or a profile JSON file) within a deadline (seconds)
    and/or a budget (USD): every catalog preset (or ``hardware``) x GPU counts x algorithms x batches x
    ``dtypes``. ``space``: the other arguments of ``firesim.search.sweep.search_space`` (gpus, algos, batches,
    catalog, samples) and ``Setting`` fields (epochs, steps, engine, whatif, overlap, ...)."""
    setting, cases = search_space([model], hardware, dtypes=dtypes, **space)
    return choose(setting, cases, deadline_s=deadline_s, budget_usd=budget_usd, executor=executor, progress=progress)
