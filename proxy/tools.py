"""The tools and ``tool_choice`` a chat request may carry, typed strictly: what is not a
function or custom tool as OpenAI defines it is refused before the upstream, so nothing
else a client writes into a tool (``server_url``, ``headers``, ...) reaches an upstream or
LiteLLM, and every part of a tool is bounded."""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

TOOL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""A tool's name as OpenAI allows it."""

MAX_TOOLS = 128
"""The most tools one request may define (OpenAI's limit)."""

MAX_TOOL_DESCRIPTION_CHARS = 8192
"""The longest description of a tool (a 400 beyond): it is prompt text the upstream reads."""


def _one_of(kinds: tuple[str, ...], tag: str = "type") -> dict[str, Any]:
    """JSON schema: an object with ``tag`` ``kind`` has a ``kind`` field, not null, and none
    of the other kinds' fields."""
    return {"allOf": [
        {"if": {"properties": {tag: {"const": kind}}, "required": [tag]},
         "then": {"required": [kind], "properties": {
             kind: {"not": {"type": "null"}}, **{other: False for other in kinds if other != kind}}}}
        for kind in kinds]}


def _check_one_of(model: BaseModel, kind: str, kinds: tuple[str, ...], what: str) -> None:
    """A ``kind`` object has its ``kind`` field and none of the others (``_one_of``)."""
    if getattr(model, kind) is None:
        raise ValueError(f"a {kind} {what} needs `{kind}`")
    for other in kinds:
        if other != kind and other in model.model_fields_set:
            raise ValueError(f"a {kind} {what} has no `{other}`")


class FunctionDefinition(BaseModel):
    """A function tool's ``function`` (OpenAI's fields only)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = Field(None, max_length=MAX_TOOL_DESCRIPTION_CHARS)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Grammar(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    definition: str
    syntax: Literal["lark", "regex"]


class CustomFormat(BaseModel):
    """A custom tool's input format: free text, or text a grammar accepts."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"allOf": [
        {"if": {"properties": {"type": {"const": "grammar"}}, "required": ["type"]},
         "then": {"required": ["grammar"], "properties": {"grammar": {"not": {"type": "null"}}}},
         "else": {"properties": {"grammar": False}}}]})
    type: Literal["text", "grammar"]
    grammar: Grammar | None = None

    @model_validator(mode="after")
    def _grammar_if_grammar(self) -> CustomFormat:
        if (self.type == "grammar") != (self.grammar is not None) \
                or (self.type == "text" and "grammar" in self.model_fields_set):
            raise ValueError("a grammar format, and only a grammar format, has `grammar`")
        return self


class CustomDefinition(BaseModel):
    """A custom tool's ``custom`` (OpenAI's fields only)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = Field(None, max_length=MAX_TOOL_DESCRIPTION_CHARS)
    format: CustomFormat | None = None


TOOL_KINDS = ("function", "custom")


class Tool(BaseModel):
    """A tool the model may call: OpenAI's chat tool types with their own fields, nothing
    more. LiteLLM would act itself on others (``type: "mcp"`` with a ``server_url`` runs its
    MCP client), and an unknown field would reach the upstream."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_one_of(TOOL_KINDS))
    type: Literal["function", "custom"]
    function: FunctionDefinition | None = None
    custom: CustomDefinition | None = None

    @model_validator(mode="after")
    def _has_its_definition(self) -> Tool:
        _check_one_of(self, self.type, TOOL_KINDS, "tool")
        return self


class ToolName(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(pattern=TOOL_NAME_PATTERN)


class NamedTool(BaseModel):
    """A tool named by ``tool_choice`` (or in its ``allowed_tools``)."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_one_of(TOOL_KINDS))
    type: Literal["function", "custom"]
    function: ToolName | None = None
    custom: ToolName | None = None

    @model_validator(mode="after")
    def _has_its_name(self) -> NamedTool:
        _check_one_of(self, self.type, TOOL_KINDS, "tool choice")
        return self


class AllowedTools(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    mode: Literal["auto", "required"]
    tools: list[NamedTool] = Field(max_length=MAX_TOOLS)


ToolMode: TypeAlias = Literal["none", "auto", "required"]
"""``tool_choice`` as a string."""
TOOL_MODE: TypeAdapter[ToolMode] = TypeAdapter(ToolMode)

CHOICE_KINDS = ("function", "custom", "allowed_tools")


class ToolChoice(BaseModel):
    """``tool_choice`` as an object: one named tool, or the tools the model may choose from."""

    model_config = ConfigDict(extra="forbid", strict=True,
                              json_schema_extra=_one_of(CHOICE_KINDS))
    type: Literal["function", "custom", "allowed_tools"]
    function: ToolName | None = None
    custom: ToolName | None = None
    allowed_tools: AllowedTools | None = None

    @model_validator(mode="after")
    def _has_its_field(self) -> ToolChoice:
        _check_one_of(self, self.type, CHOICE_KINDS, "tool choice")
        return self
