"""The plan IR (``ir``: the semantics), the builders, the verifier and the algorithm registry."""

from firesim.plans.builders import (
    binomial_tree,
    double_binary_tree,
    halving_doubling,
    hierarchical,
    node_groups,
    parameter_server,
    ring,
)
from firesim.plans.ir import OP_NAMES, Op, Plan, PlanBuilder, chunk_bounds
from firesim.plans.registry import (
    Algorithm,
    Choice,
    Options,
    algorithms,
    allreduce_time,
    build,
    get,
    register,
    resolve,
    split_specs,
)
from firesim.plans.verify import PlanError, match_messages, verify

__all__ = [
    "OP_NAMES", "Algorithm", "Choice", "Op", "Options", "Plan", "PlanBuilder", "PlanError", "algorithms",
    "allreduce_time", "binomial_tree", "build", "chunk_bounds", "double_binary_tree", "get", "halving_doubling",
    "hierarchical", "match_messages", "node_groups", "parameter_server", "register", "resolve", "ring",
    "split_specs", "verify",
]
