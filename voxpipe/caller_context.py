"""Who is calling: the context a call starts with, and the templates that use it.

The caller's number and name, and the channel variables the bot asks for (``caller.variables``
in the bot file), come from Asterisk: over ARI from the channel entering the Stasis app; with
``AudioSocket()`` or ``Dial(AudioSocket/...)`` from the dialplan, which posts them to the bot
(``POST /calls/{uuid}/context``) before it connects; over the call API from ``call_start``.
With call records, ``customer`` is the customer whose phone is the caller's number.

Greetings, system prompts and tool arguments may use ``{caller.number}``, ``{caller.name}``,
``{caller.VARIABLE}``, ``{customer.name}``, ``{customer.phone}`` and ``{customer.KEY}`` (a key
of the customer's data); ``{customer.name|there}`` gives what to say when it is unknown
(without a default, nothing), and ``{customer.name|caller.name|there}`` tries another field
first. Values are data: they are put in as they are, in one pass, so a
caller name holding ``{x}`` or ``${VAR}`` comes out literally, never read as a template.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

FIELD = re.compile(r"\{(caller|customer)\.([A-Za-z_][A-Za-z0-9_]*)((?:\|[^{}|]*)*)\}")
_NAME = re.compile(r"(caller|customer)\.([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(slots=True)
class Customer:
    """A row of the ``customers`` table: the caller, when their number is known there."""

    phone: str
    name: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CallerContext:
    """What the bot knows about the caller when the call starts.

    ``way_in`` is how the call came: ``audiosocket`` (the dialplan's ``AudioSocket()`` or
    ``Dial(AudioSocket/...)``), ``ari`` (a Stasis app bridged to externalMedia) or
    ``websocket`` (the call API, whose ``call_start`` gives ``initial_vars``).
    """

    number: str = ""
    name: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    way_in: str = "audiosocket"
    customer: Customer | None = None

    def value(self, scope: str, key: str) -> str:
        """The text of ``{scope.key}`` ("" when unknown)."""
        if scope == "caller":
            if key == "number":
                return self.number
            if key == "name":
                return self.name
            return self.variables.get(key, "")
        customer = self.customer
        if customer is None:
            return ""
        if key == "name":
            return customer.name
        if key == "phone":
            return customer.phone
        value = customer.data.get(key)
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        import json

        return json.dumps(value, ensure_ascii=False)


def render(template: str, caller: CallerContext | None) -> str:
    """``template`` with every ``{caller.x}`` / ``{customer.x|default}`` filled in, once."""
    if "{" not in template:
        return template

    def fill(match: re.Match[str]) -> str:
        value = caller.value(match.group(1), match.group(2)) if caller is not None else ""
        if value:
            return value
        for fallback in match.group(3).split("|")[1:]:
            field = _NAME.fullmatch(fallback.strip())
            if field is None:
                return fallback
            value = caller.value(field.group(1), field.group(2)) if caller is not None else ""
            if value:
                return value
        return ""

    return FIELD.sub(fill, template)


def render_arguments(arguments: dict[str, Any], caller: CallerContext | None) -> dict[str, Any]:
    """Tool arguments with the caller context filled into their text (nested ones too)."""

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return render(value, caller)
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return {k: walk(v) for k, v in arguments.items()}


def uses_context(template: str | None) -> bool:
    """Whether ``template`` asks for any of the caller context."""
    return bool(template) and FIELD.search(template or "") is not None
