"""The API's request and response bodies as pydantic models: the handlers read bodies with them, and the OpenAPI
document's schemas are generated from them."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from aiohttp import web
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from cluster.commands import QUALITIES, scalar_problem
from cluster.names import Name

from .appkeys import MAX_BATCH
from .replies import error
from .users import MAX_PASSWORD, MIN_PASSWORD, Role

SCALAR_SCHEMA: dict[str, Any] = {"type": ["boolean", "integer", "number", "string", "null"]}
MAX_COMMENT = 1000
MAX_SHELVE_MINUTES = 60 * 24 * 30
MAX_TRANSFER_TIMEOUT = 60.0

M = TypeVar("M", bound=BaseModel)


def _scalar(value: Any) -> Any:
    problem = scalar_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


Scalar = Annotated[Any, AfterValidator(_scalar), WithJsonSchema(SCALAR_SCHEMA)]
Number = Annotated[float, Strict()]  # a JSON number: not true/false, not a numeric string
Seconds = Annotated[Number, Field(allow_inf_nan=False)]


class Body(BaseModel):
    """A request body: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


class PointWrite(Body):
    value: Scalar


class PointReport(Body):
    name: Name
    value: Scalar
    quality: Literal[QUALITIES] = "good"  # type: ignore[valid-type]
    ts: Seconds = Field(None, description="Seconds since the epoch (default: when the server received it).")  # type: ignore[assignment]


class PointBatch(Body):
    updates: list[PointReport] = Field(min_length=1, max_length=MAX_BATCH)


class AlarmAction(Body):
    # Left out it is the caller (None: defaults are not validated); given, it must be a name (null is refused).
    user: Name = Field(None, description="Who acts: the caller (default); only the cluster token may name someone else.")  # type: ignore[assignment]
    comment: str = Field("", max_length=MAX_COMMENT)
    minutes: Number | None = Field(None, gt=0, le=MAX_SHELVE_MINUTES, description="Shelve for this long.")


class Transfer(Body):
    to: Name = Field(description="The server to hand the active role to.", examples=["backup"])
    timeout: Number | None = Field(None, gt=0, le=MAX_TRANSFER_TIMEOUT, description="Seconds to wait (default: the cluster's).")


class Login(Body):
    user: str
    password: str = Field(max_length=MAX_PASSWORD)


class UserChange(Body):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    # Left out they are None (defaults are not validated); given, null is refused.
    role: Literal[tuple(Role.__members__)] = None  # type: ignore[valid-type]
    password: str = Field(None, min_length=MIN_PASSWORD, max_length=MAX_PASSWORD, json_schema_extra={"writeOnly": True})  # type: ignore[assignment]

    @model_validator(mode="before")
    @classmethod
    def _not_empty(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data:
            raise ValueError("name 'role', 'password' or both")
        return data


class Point(BaseModel):
    """A point as the API answers it."""

    name: str
    value: Scalar
    quality: Literal[QUALITIES]  # type: ignore[valid-type]
    timestamp: float
    source: str
    desired: dict[str, Any] | None = Field(None, description="The operator write still being driven to the device.")


class Error(BaseModel):
    """Every error answer."""

    error: str
    field: str | None = None
    problems: list[str] | None = None
    active: str | None = None
    active_api: str | None = None
    role: str | None = Field(None, description="On 403: the role needed.")


MODELS: tuple[type[BaseModel], ...] = (PointWrite, PointReport, PointBatch, Point, AlarmAction, Transfer, Login, UserChange, Error)


def _field(loc: tuple[int | str, ...], kind: str) -> str:
    """A pydantic error location as the API names fields: updates[1].quality; a missing or unknown key names the
    object that should (not) hold it, and the body itself is "body"."""
    if kind in ("missing", "extra_forbidden"):
        loc = loc[:-1]
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "body"


async def read_body(request: web.Request, model: type[M], example: str) -> M | web.Response:
    """The request's JSON body as `model`, or a 400 answer naming the first field that is wrong (and an example)."""
    try:
        data = await request.json()
    except (ValueError, LookupError):  # not JSON, not UTF-8 (UnicodeDecodeError), or an unknown charset
        return error(400, f"body must be JSON like {example}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = _field(first["loc"], first["type"])
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "model_type":
            message = f"must be a JSON object like {example}"
        elif first["type"] == "extra_forbidden":
            message = f"has an unknown key {first['loc'][-1]!r}"
        elif first["type"] == "missing":
            message = f"lacks the key {first['loc'][-1]!r}"
        return error(400, f"{field}: {message}", field=field)
