"""vilmo: value policies, value instructions (VILMO), value classifiers and evaluation.

A library usable without the gateway: it never imports ``proxy``, FastAPI or Starlette.
Heavy parts (torch, the encoder) load only when first used.
"""

from vilmo.instructions import Instruction, InstructionGenerator, RelevanceGenerator
from vilmo.policy import Action, Policy, PolicyError, PolicyIssue, load_policy
from vilmo.policy_store import PolicyStore, UnknownPolicy
from vilmo.principles import Principle, PrincipleBank
from vilmo.values import VALUES, Value, get_value

__all__ = [
    "VALUES",
    "Action",
    "Instruction",
    "InstructionGenerator",
    "Policy",
    "PolicyError",
    "PolicyIssue",
    "PolicyStore",
    "Principle",
    "PrincipleBank",
    "RelevanceGenerator",
    "UnknownPolicy",
    "Value",
    "get_value",
    "load_policy",
]
