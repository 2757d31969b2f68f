"""Max-min fair rates: the vectorised solver the fast interpreter uses, and plain progressive filling."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from firesim.engine.model import TOLERANCE


def max_min_rates(flow: np.ndarray, link: np.ndarray, n_flows: int, capacity_Bps: np.ndarray) -> np.ndarray:
    """Max-min fair rates of ``n_flows`` flows given their (flow, link) incidence pairs; every flow crosses
    at least one link. Vectorised over the pairs, in rounds of local bottlenecks.

    A link whose fair share (remaining capacity / flows not yet fixed) is no larger than the share of any
    other link its flows cross saturates at exactly that share: shares only grow as other flows are fixed
    below them. So every such link fixes its flows in the same round; the smallest share is always one, and
    the number of rounds is the depth of the chain of bottlenecks, not the number of distinct rates.
    """
    flow, link = np.asarray(flow, np.int64), np.asarray(link, np.int64)
    if flow.size > 1 and np.any(flow[1:] < flow[:-1]):
        order = np.argsort(flow, kind="stable")
        flow, link = flow[order], link[order]
    n_links = capacity_Bps.shape[0]
    remaining = capacity_Bps.astype(np.float64)
    rate = np.zeros(n_flows)
    while flow.size:
        count = np.bincount(link, minlength=n_links)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.maximum(remaining, 0.0) / count
        starts = np.flatnonzero(np.concatenate([[True], flow[1:] != flow[:-1]]))
        sizes = np.diff(np.append(starts, flow.size))
        flow_share = np.minimum.reduceat(share[link], starts)  # each flow's tightest link
        pair_share = np.repeat(flow_share, sizes)
        link_low = np.full(n_links, np.inf)
        np.minimum.at(link_low, link, pair_share)
        bottleneck = link_low >= share * (1 - TOLERANCE)  # no flow here is held lower by another link
        fixed = np.logical_or.reduceat(bottleneck[link], starts)
        rate[flow[starts[fixed]]] = flow_share[fixed]
        gone = np.repeat(fixed, sizes)
        remaining -= np.bincount(link[gone], weights=pair_share[gone], minlength=n_links)
        flow, link = flow[~gone], link[~gone]
    return rate


def reference_max_min(flows: dict[int, list[int]], capacity_Bps: np.ndarray) -> dict[int, float]:
    """Progressive filling written plainly: raise every unfrozen flow until a link saturates, freeze its flows."""
    remaining = {link: float(capacity_Bps[link]) for links in flows.values() for link in links}
    unfrozen = set(flows)
    rate: dict[int, float] = {}
    level = 0.0
    while unfrozen:
        count: dict[int, int] = defaultdict(int)
        for f in unfrozen:
            for link in flows[f]:
                count[link] += 1
        step = min(remaining[link] / c for link, c in count.items())
        level += step
        saturated = set()
        for link, c in count.items():
            if remaining[link] / c <= step * (1 + TOLERANCE):
                saturated.add(link)
                remaining[link] = 0.0
            else:
                remaining[link] -= c * step
        for f in [f for f in unfrozen if any(link in saturated for link in flows[f])]:
            rate[f] = level
            unfrozen.discard(f)
    return rate
