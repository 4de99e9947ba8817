"""A client API key in the config file (``auth.keys``): its tenant, its bound policy, and which
policies it may choose instead with ``X-Vilmo-Policy`` (or the check route's ``policy``).

Refused by default: a key chooses nothing unless ``allow_policy_header`` is true, and then only
the policies ``policies`` lists (``["*"]``: any loaded policy) besides its bound one, which the
header may always name. ``allow_policy_header: true`` alone, as configs before ``policies``
wrote it, lets the key name only its bound policy: a key its operator bound to a policy cannot
pick another with no checks (a 403, ``policy_not_allowed``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from proxy.config_keys import ConfigKey

ANY_POLICY = "*"
"""In ``policies``: any loaded policy."""


class KeyBinding(BaseModel):
    """A client API key, the tenant it stands for, and the policy bound to it."""

    model_config = ConfigDict(extra="forbid")
    key: ConfigKey = Field(description="The key itself or os.environ/NAME, 16+ characters.")
    name: str = Field(min_length=1, description="Tenant name used in metrics and audit.")
    policy: str | None = Field(None, description="Policy name; default: default_policy.")
    allow_policy_header: bool = Field(
        False, description="May name a policy by X-Vilmo-Policy: its bound one, or one of "
        "`policies`.")
    policies: list[str] = Field(
        default_factory=list, description="With allow_policy_header: the policies it may "
        "choose besides its bound one; [\"*\"]: any loaded policy. Empty: only its bound one.")

    @model_validator(mode="after")
    def _policies_need_the_header(self) -> KeyBinding:
        """A list the key could never use is a mistake worth naming at start-up."""
        if self.policies and not self.allow_policy_header:
            raise ValueError(f"key {self.name!r}: `policies` needs `allow_policy_header: true` "
                             "(without it the key cannot choose a policy)")
        if ANY_POLICY in self.policies and len(self.policies) > 1:
            raise ValueError(f"key {self.name!r}: `policies: [\"*\"]` allows every policy; "
                             "list no others beside it")
        return self

    def choices(self) -> frozenset[str]:
        """What the header may name beside the bound policy (``ANY_POLICY``: anything); empty
        when it may name nothing else."""
        return frozenset(self.policies) if self.allow_policy_header else frozenset()
