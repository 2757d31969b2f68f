"""The plan IR, the algorithm builders and the verifier (see ir.py for the semantics)."""

from firesim.plans.builders import (
    BUILDERS,
    binomial_tree,
    build,
    canonical_name,
    double_binary_tree,
    halving_doubling,
    hierarchical,
    node_groups,
    parameter_server,
    parse_algo,
    ring,
    split_algos,
)
from firesim.plans.ir import OP_NAMES, Op, Plan, PlanBuilder, chunk_bounds, write_json_atomic
from firesim.plans.verify import PlanError, match_messages, verify

__all__ = [
    "BUILDERS", "OP_NAMES", "Op", "Plan", "PlanBuilder", "PlanError", "binomial_tree", "build",
    "canonical_name", "chunk_bounds", "double_binary_tree", "halving_doubling", "hierarchical",
    "match_messages", "node_groups", "parameter_server", "parse_algo", "ring", "split_algos", "verify", "write_json_atomic",
]
