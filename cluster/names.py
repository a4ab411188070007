"""The one rule for what makes a name valid: points, devices, documents, users and the keys of a function's state."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, WithJsonSchema

MAX_NAME_LENGTH = 200

# The same rule for the API's and the configuration's JSON Schema (a pattern cannot say "printable").
NAME_SCHEMA: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH, "pattern": r"^[^\s]+$"}


def name_problem(value: object) -> str | None:
    """Why `value` is not a valid name, or None: 1..MAX_NAME_LENGTH printable characters, no whitespace."""
    if type(value) is not str:
        return f"must be a str, got {type(value).__name__}"
    if not value:
        return "must not be empty"
    if len(value) > MAX_NAME_LENGTH:
        return f"must be at most {MAX_NAME_LENGTH} characters, got {len(value)}"
    # isprintable() is False for control characters and for every whitespace character but " ".
    if not value.isprintable() or " " in value:
        return f"must not contain whitespace or control characters, got {value!r}"
    return None


def valid_name(value: str) -> str:
    problem = name_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


Name = Annotated[str, AfterValidator(valid_name), WithJsonSchema(NAME_SCHEMA)]
