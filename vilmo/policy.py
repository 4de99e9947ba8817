"""Value policies: which values a deployment protects, how much, and what to do about them.

A policy is a YAML file validated by the pydantic models below; ``vilmo policy schema`` prints
their JSON Schema. ``load_policy`` turns every validation error into a ``PolicyIssue`` that
names the file, the line and the field, so a typo in a policy is found without guessing.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from vilmo.values import VALUES
from vilmo.yamlfile import FileError, FileIssue, load_yaml_model

_SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def _known_value(value_id: str) -> str:
    if value_id not in VALUES:
        raise ValueError(f"unknown value id {value_id!r} (see `vilmo values` for the taxonomy)")
    return value_id


def _distinct_ids(principles: list[CustomPrinciple]) -> list[CustomPrinciple]:
    """Each custom principle is judged and reported as ``custom/<id>``: two with one id would
    leave all but the last unjudged."""
    first: dict[str, int] = {}
    for i, principle in enumerate(principles):
        if principle.id in first:
            raise ValueError(f"principle id {principle.id!r} is given twice (entries "
                             f"{first[principle.id]} and {i}); ids must be distinct")
        first[principle.id] = i
    return principles


ValueId = Annotated[str, AfterValidator(_known_value),
                    Field(json_schema_extra={"enum": sorted(VALUES)})]
"""A taxonomy value id; the JSON Schema lists them, so editors and CI refuse a typo too."""
Slug = Annotated[str, Field(pattern=_SLUG.pattern, max_length=64)]


class Action(StrEnum):
    """What the gateway does when a reply's violation score reaches the threshold."""

    ALLOW = "allow"  # score and record only
    ANNOTATE = "annotate"  # report in headers (and, on request, in the body)
    BLOCK = "block"  # replace the reply with the policy's refusal
    REGENERATE = "regenerate"  # ask again with a stronger instruction, then block


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ValueRule(_Strict):
    """How one value is weighed and enforced."""

    weight: float = Field(1.0, ge=0.0, le=1.0,
                          description="Importance of the value (0..1): ranks principles and "
                                      "weighs the Value Compass alignment score.")
    threshold: float = Field(0.5, gt=0.0, le=1.0,
                             description="Violation probability at or above which the action "
                                         "is taken.")
    action: Action = Action.ANNOTATE


class Examples(_Strict):
    violating: list[str] = Field(default_factory=list)
    acceptable: list[str] = Field(default_factory=list)


class CustomPrinciple(_Strict):
    """A principle in the policy's own words; it joins the built-in bank for this policy."""

    id: Slug
    text: str = Field(min_length=3, description="The rule, e.g. 'Never give medication doses.'")
    value: ValueId | None = Field(None, description="The taxonomy value it refines, if any.")
    instruction: str | None = Field(None, description="What to tell the model; default: text.")
    weight: float = Field(1.0, ge=0.0, le=1.0)
    threshold: float = Field(0.5, gt=0.0, le=1.0)
    action: Action = Action.ANNOTATE
    examples: Examples = Field(default_factory=Examples)


class InstructionSettings(_Strict):
    """How the value instruction is generated and where it is placed."""

    generator: Literal["relevance", "vilmo", "static", "none"] = Field(
        "relevance", description="vilmo: stake-aware (an instruction only when the values-at-"
                                 "stake model judges a value at stake, from the principles of "
                                 "those values; ranked by a per-target scorer if `weights` is "
                                 "set, else by values at stake x weight x similarity); "
                                 "relevance: always the top principles by weight x similarity; "
                                 "static: `text`; none: no instruction (the other settings "
                                 "may stay, for switching back).")
    placement: Literal["system", "user_prefix"] = Field(
        "system", description="A system message before the conversation, or a prefix of the "
                              "last user turn (for models that ignore system messages).")
    max_principles: int = Field(3, ge=1, le=10)
    style: Literal["imperative", "reasoned", "role"] = "imperative"
    text: str | None = Field(None, min_length=1,
                             description="The instruction for the static generator (required "
                                         "there, refused with relevance or vilmo).")
    weights: str | None = Field(None, description="The vilmo generator's per-target scorer: a "
                                                  "`vilmo train generator` run directory or its "
                                                  "scorer.npz.")
    stakes_threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="vilmo: the probability that a value is at stake from which an instruction "
                    "is injected; below it only `baseline` (if set). Default: the values-at-stake "
                    "model's operating point, chosen on dev (see vilmo/models/GENERATOR.md).")
    baseline: str | None = Field(
        None, min_length=1, max_length=500,
        description="vilmo: a short instruction sent when no value is at stake (default: none; "
                    "refused with relevance or static).")

    @model_validator(mode="after")
    def _settings_fit_the_generator(self) -> InstructionSettings:
        """A setting the chosen generator would ignore is an error, not silence: `static`
        without `text` would inject nothing on every request."""
        if self.generator == "static" and self.text is None:
            raise ValueError("the static generator needs `text` (the instruction it sends)")
        if self.text is not None and self.generator not in ("static", "none"):
            raise ValueError(f"`text` is used only by the static generator, not by "
                             f"{self.generator!r}")
        if self.baseline is not None and self.generator not in ("vilmo", "none"):
            raise ValueError(f"`baseline` is used only by the vilmo generator, not by "
                             f"{self.generator!r}")
        return self


FAIL_OPEN_MAX_CHARS = 8_000
"""The default ``checks.fail_open_max_chars``: about 1.6-3 s of the judge's time on 2 cores
(0.2-0.4 ms a character), well within the default ``checks.timeout_s``."""


InputRole = Literal["system", "developer", "user", "assistant", "tool", "function"]
INPUT_ROLES: tuple[InputRole, ...] = get_args(InputRole)
"""Every role of a chat message: a client writes them all, so the input check reads them all
unless a policy narrows ``checks.input_roles``."""


class CheckSettings(_Strict):
    """What the value classifier looks at."""

    input: bool = Field(False, description="Score the client's input before calling the "
                                           "model: the text of every message of the roles "
                                           "`input_roles` names, and the tool (and function, "
                                           "response format) definitions.")
    input_roles: tuple[InputRole, ...] = Field(
        INPUT_ROLES, min_length=1,
        description="The roles of the messages the input check reads (default: all). Each "
                    "role is written by the client, so narrowing it (e.g. to [user]) is faster "
                    "but lets text in the other roles reach the model unchecked.")
    unreadable_parts: Literal["refuse", "allow"] = Field(
        "refuse", description="Content parts the judge cannot read (image_url, input_audio, "
                              "file) in a checked message: refuse (a 400 unreadable_input "
                              "before the model is called) or allow (forwarded unchecked).")
    output: bool = Field(True, description="Score the model's reply.")
    timeout_s: float = Field(5.0, gt=0.0, le=120.0)
    max_chars: int = Field(100_000, ge=1, le=10_000_000,
                           description="Most characters one check reads (all the input texts: "
                                       "messages and tool definitions; or a reply, whose prompt "
                                       "is context and does not count; each text counts at "
                                       "least 32). Beyond it the text is never passed "
                                       "unchecked, whatever `on_error`: input is refused "
                                       "before the model is called (413 check_too_large, as on "
                                       "/v1/values/check), a reply is a 503 check_too_large.")
    fail_open_max_chars: int = Field(
        FAIL_OPEN_MAX_CHARS, ge=1, le=10_000_000,
        description="Most characters (counted as for `max_chars`, which it may not exceed) of a "
                    "check that may fail open: on a failure (timeout, overload, error) a larger "
                    "check fails closed (503 guard_unavailable) whatever `on_error` says, "
                    "because the client chooses the size, and a large enough text runs past "
                    "`timeout_s`. Default 8,000 (about 1.6-3 s of judge time on 2 cores), or "
                    "`max_chars` when that is lower.")

    @model_validator(mode="after")
    def _fail_open_within_max_chars(self) -> CheckSettings:
        """Unset, ``fail_open_max_chars`` is its default or a lower ``max_chars`` (read after
        validation, so ``5000.0`` or ``"5000"`` lowers it as ``5000`` does): a policy that
        only lowers ``max_chars`` stays valid. Set, it may not exceed ``max_chars``."""
        if "fail_open_max_chars" not in self.model_fields_set:
            object.__setattr__(self, "fail_open_max_chars",  # frozen: set while validating
                               min(self.fail_open_max_chars, self.max_chars))
        if self.fail_open_max_chars > self.max_chars:
            raise ValueError(f"fail_open_max_chars ({self.fail_open_max_chars}) is over "
                             f"max_chars ({self.max_chars}): no check reads more than max_chars")
        return self


class StreamSettings(_Strict):
    """How streamed replies are checked (see the README's table of what each mode guarantees)."""

    mode: Literal["buffer", "chunked", "monitor"] = Field(
        "buffer", description="buffer: hold the whole reply, check, then send; chunked: release "
                              "windows that passed the check; monitor: pass through, check "
                              "alongside, report at the end (no protection).")
    window_tokens: int = Field(40, ge=1, le=4096,
                               description="chunked: tokens held before the reply so far is "
                                           "checked again and, if it passes, released.")
    context_tokens: int = Field(20, ge=0, le=4096,
                                description="Unused, kept so older policies load: every chunked "
                                            "check now reads the whole reply so far.")
    stream_timeout_s: float = Field(300.0, gt=0.0, le=3600.0,
                                    description="Total time a stream may take (the upstream "
                                                "call's timeout applies per chunk); past it the "
                                                "stream ends with a 504 stream_timeout error.")


class Policy(_Strict):
    """A value policy: the values to protect, their weights, and the actions."""

    name: Slug
    description: str = ""
    values: dict[ValueId, ValueRule] = Field(min_length=1)
    principles: Annotated[list[CustomPrinciple], AfterValidator(_distinct_ids)] = Field(
        default_factory=list)
    instructions: InstructionSettings = Field(default_factory=InstructionSettings)
    checks: CheckSettings = Field(default_factory=CheckSettings)
    on_error: Literal["closed", "open"] = Field(
        "closed", description="closed: a failing guard yields an error, never an unchecked "
                              "reply; open: the reply goes through, marked and counted (up to "
                              "`checks.fail_open_max_chars`; a larger failed check fails closed).")
    refusal: str = "I can't help with that, because it would go against the values this " \
                   "service is bound to."
    block_with: Literal["reply", "error"] = Field(
        "reply", description="reply: an OpenAI reply with the refusal and finish_reason "
                             "content_filter; error: a 400 error (code content_filter).")
    max_regenerations: int = Field(1, ge=0, le=5, description="regenerate: attempts before "
                                                              "falling back to block.")
    streaming: StreamSettings = Field(default_factory=StreamSettings)

    def weight_of(self, value_id: str | None) -> float:
        """The policy's weight for a value (1.0 for principles tied to no value)."""
        if value_id is None:
            return 1.0
        rule = self.values.get(value_id)
        return rule.weight if rule else 0.0


PolicyIssue = FileIssue


class PolicyError(FileError):
    """A policy file that cannot be used; ``issues`` lists every problem found."""


def load_policy(path: str | Path) -> Policy:
    """Read and validate one policy file, or raise PolicyError naming file, line and field."""
    return load_yaml_model(path, Policy, PolicyError)


def policy_schema() -> dict[str, Any]:
    """The JSON Schema of a policy file."""
    return Policy.model_json_schema()
