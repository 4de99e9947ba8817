"""vilmo: value policies, value instructions (VILMO), value classifiers and evaluation.

A library usable without the gateway: it never imports ``proxy``, FastAPI or Starlette.
Heavy parts (torch, the encoder, LiteLLM) load only when first used.
"""

from vilmo.errors import VilmoError
from vilmo.instruct.generator import VilmoGenerator
from vilmo.instruct.instructions import Instruction, InstructionGenerator, RelevanceGenerator
from vilmo.instruct.principles import Principle, PrincipleBank
from vilmo.judge.batcher import MicroBatcher
from vilmo.judge.classifier import ClassifierError, ScoreInput, ValueClassifier, ValueScores
from vilmo.judge.policy_classifier import PolicyClassifier, PolicyClassifiers
from vilmo.judge.value_model import BuiltinClassifier
from vilmo.policy import Action, Policy, PolicyError, PolicyIssue, load_policy
from vilmo.policy_store import PolicyStore, UnknownPolicy
from vilmo.values import VALUES, Value, get_value
from vilmo.verdict import Verdict, decide

__all__ = [
    "VALUES",
    "Action",
    "BuiltinClassifier",
    "ClassifierError",
    "Instruction",
    "InstructionGenerator",
    "MicroBatcher",
    "Policy",
    "PolicyClassifier",
    "PolicyClassifiers",
    "PolicyError",
    "PolicyIssue",
    "PolicyStore",
    "Principle",
    "PrincipleBank",
    "RelevanceGenerator",
    "ScoreInput",
    "UnknownPolicy",
    "Value",
    "ValueClassifier",
    "ValueScores",
    "Verdict",
    "VilmoError",
    "VilmoGenerator",
    "decide",
    "get_value",
    "load_policy",
]
