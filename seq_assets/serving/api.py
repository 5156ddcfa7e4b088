"""The HTTP API's contract: its requests as typed models, and the OpenAPI document made from them.

The handlers of ``app.py`` read every query and batch body through these models (:func:`parse`): a
value of the wrong type is a 400 naming the parameter. What depends on the feature (``n`` against
its N, the field names, the user id's type, the times) the service checks after them. ``openapi``
turns the models and the route table of ``app.py`` into the document ``GET /openapi.json`` answers.

The response models are never built while serving (the service answers plain dicts, orjson writes
them); they describe those dicts, and the fuzz test of the API checks every answer against them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StrictInt,
    ValidationError,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import models_json_schema

from seq_assets.serving.service import FORMATS, RequestError

MAX_BATCH_USERS = 1000
API_KEY_HEADER = "X-API-Key"
REF = "#/components/schemas/{model}"
_INT64 = {"type": "integer", "format": "int64", "minimum": -(2**63), "maximum": 2**63 - 1}
_TIME_FORMS = ("an ISO time (2026-03-01 or 2026-03-01T12:00:00Z; no offset means UTC), epoch milliseconds "
               "(1772366400000), or a duration back from")
# The forms a time parameter documents (the server reads any ISO 8601 text Python reads).
_TIME = [{"type": "string", "format": "date-time"}, {"type": "string", "format": "date"},
         {"type": "string", "pattern": r"^[0-9]+$"}, {"type": "string", "pattern": r"^[0-9]+\s*(ms|s|m|h|d|w)$"}]
_TIME_OR_MS = {"anyOf": [*_TIME, {"type": "integer"}, {"type": "null"}]}

# ---- requests ----------------------------------------------------------------------------------

UserId = Annotated[Any, WithJsonSchema({
    "anyOf": [_INT64, {"type": "string"}],
    "description": "An id of the feature's users, in their type: an int64 (digits in a path) or a string."})]


class SequenceOptions(BaseModel):
    """What a sequence request may ask: the query of ``GET /v1/sequences/{feature}/{user_id}``."""

    model_config = ConfigDict(extra="ignore")

    n: int | None = Field(None, json_schema_extra={"minimum": 1}, description=(
        "How many events, newest first: 1 to the feature's N (its max_length) or the tenant's max_n, "
        "whichever is lower; that limit when absent."))
    since: str | None = Field(None, json_schema_extra={"anyOf": [*_TIME, {"type": "null"}]}, description=(
        f"The oldest event time to include: {_TIME_FORMS} as_of (30m, 12h, 7d). Never before the "
        "feature's window."))
    fields: str | None = Field(None, description=(
        "The fields to answer, comma-separated (GET /v1/features lists each feature's); its fields "
        "when absent."), examples=["event_id,ts"])
    format: Literal[FORMATS] | None = Field(None, description=(
        "json (the default): the events as objects, newest first; arrays: one array per field, padded "
        "to n, with a mask."))
    as_of: str | None = Field(None, json_schema_extra={"anyOf": [*_TIME, {"type": "null"}]}, description=(
        f"Answer as of this time (events before it): {_TIME_FORMS} now. Now when absent."))

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_absent(cls, value):
        """``?n=&format=`` (or ``"n": ""``) asks for the defaults, as leaving them out does."""
        return None if value == "" else value

    def options(self) -> dict:
        """The keyword arguments of :meth:`SequenceService.parse`."""
        return {"n": self.n, "since": self.since, "fields": self.fields or None, "fmt": self.format,
                "as_of": self.as_of}


class BatchRequest(SequenceOptions):
    """The body of ``POST /v1/sequences/{feature}/batch``: the users, and the options of a single read."""

    user_ids: list[UserId] = Field(max_length=MAX_BATCH_USERS, description=(
        "The users, answered in this order (the same id twice, twice); JSON numbers for an int64 feature, "
        "strings for a string one."))
    fields: list[str] | str | None = Field(None, description=(
        "The fields to answer: a list of names, or one comma-separated string; the feature's fields "
        "when absent."), examples=[["event_id", "ts"]])
    since: str | StrictInt | None = Field(None, json_schema_extra=_TIME_OR_MS, description=(
        f"The oldest event time to include: {_TIME_FORMS} as_of; a JSON number is epoch milliseconds."))
    as_of: str | StrictInt | None = Field(None, json_schema_extra=_TIME_OR_MS, description=(
        f"Answer as of this time: {_TIME_FORMS} now; a JSON number is epoch milliseconds."))

    @classmethod
    def usage(cls) -> str:
        optional = [name for name, f in cls.model_fields.items() if not f.is_required()]
        return 'body must be {"user_ids": [...]} plus optional ' + ", ".join(optional)


class FeaturePath(BaseModel):
    feature: str = Field(description="A feature's table (engagements_v1) or its name (engagements: its served version).")


class SequencePath(FeaturePath):
    user_id: UserId


# The words for a JSON Schema type in an error message.
_NOUNS = {"integer": "a whole number", "string": "a string", "number": "a number", "boolean": "true or false",
          "object": "an object", "array": "a list"}


def _noun(schema: dict) -> str:
    if "anyOf" in schema:
        return " or ".join(dict.fromkeys(_noun(s) for s in schema["anyOf"] if s.get("type") != "null"))
    if schema.get("type") == "array" and schema.get("items", {}).get("type"):
        return f"a list of {_noun(schema['items']).removeprefix('a ')}s"
    return _NOUNS.get(schema.get("type"), "a JSON value")


def parse(model: type[SequenceOptions], data) -> SequenceOptions:
    """``data`` (a query's parameters, a decoded JSON body) as ``model``, or a 400 naming the first problem."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise RequestError(400, _message(model, data, e.errors(include_url=False))) from None


def _message(model: type[SequenceOptions], data, errors: list[dict]) -> str:
    required = {name for name, f in model.model_fields.items() if f.is_required()}
    # The body's shape first (only a body has required fields, or can be other than an object): its
    # model's usage says what the body should be.
    for err in errors:
        if not err["loc"] or (err["loc"][0] in required and err["type"] in ("missing", "list_type")):
            return model.usage()
    err = errors[0]
    name, ctx = err["loc"][0], err.get("ctx") or {}
    value = data.get(name) if isinstance(data, dict) else err["input"]
    if err["type"] == "too_long":
        return f"at most {ctx['max_length']} {name} per batch, got {ctx['actual_length']}"
    if err["type"] == "literal_error":
        return f"unknown {name} {value!r}: use {ctx['expected'].replace(chr(39), '')}"
    return f"{name} must be {_noun(_properties(model)[name])}, got {value!r}"


@functools.cache
def _properties(model: type[BaseModel]) -> dict:
    return model.model_json_schema()["properties"]


# ---- responses (described, not built) -----------------------------------------------------------

class Error(BaseModel):
    """Every 4xx answer of the API."""

    error: str = Field(min_length=1, description="What is wrong, naming the parameter, the value or the limit.")
    status: int = Field(description="The HTTP status of the answer.")


class Owner(BaseModel):
    shard: int = Field(ge=0, description="The shard that owns these users.")
    url: str | None = Field(description="Where that shard answers, when the shard map is configured.")
    user_ids: list[int | str] = Field(description="The batch's users that shard owns.")


class Misdirected(Error):
    """421: this server is one shard of several (``seqctl serve --shard I/N``) and does not own the user.

    Send the request to the owner shard: ``shard`` (and ``url``) for one user; for a batch, ``owners``
    lists each other shard and its users (a batch is answered whole, by one shard, or not at all)."""

    shards: int = Field(ge=2, description="How many shards the users are split over.")
    shard: int | None = Field(default=None, ge=0, description="The owner shard of the user asked for.")
    url: str | None = Field(default=None, description="Where the owner shard answers, when the shard map is configured.")
    owners: list[Owner] | None = Field(default=None, description="A batch: the other shards and their users.")


class _Sequence(BaseModel):
    feature: str = Field(description="The feature's table, also when asked by name.")
    user_id: int | str = Field(description="The user, in the feature's user type.")
    n: int = Field(ge=1, description="The n the answer was cut to.")


class SequenceEvents(_Sequence):
    """``format=json``: the events as objects of the fields asked, newest first."""

    model_config = ConfigDict(extra="forbid", title="SequenceEvents")

    events: list[dict[str, Any]] = Field(description=(
        "At most n events, newest first; each an object of the fields asked (null where an event has no value)."))


class SequenceArrays(_Sequence):
    """``format=arrays``: one array of n values per field asked (0 or "" past the events), and a mask."""

    model_config = ConfigDict(extra="allow", title="SequenceArrays")
    __pydantic_extra__: dict[str, list[Any]]

    length: int = Field(ge=0, description="How many of the n positions hold events.")
    mask: list[Literal[0, 1]] = Field(description="n flags: 1 for an event, 0 for padding.")


class Sequence(RootModel[SequenceEvents | SequenceArrays]):
    """One user's sequence, in the format asked."""


class Batch(BaseModel):
    feature: str
    results: list[SequenceEvents | SequenceArrays] = Field(description="One sequence per user id, in the order asked.")


class Freshness(BaseModel):
    lag_seconds: float | None = Field(description="Seconds since the newest event of the feature's sources the server has seen.")
    stream_tail: bool = Field(description="Whether the server follows the stream.")


class Completeness(BaseModel):
    snapshot_day: date | None = Field(description="The closed day whose sequences the server holds.")
    snapshot_users: int
    closed_days_not_in_snapshot: int | None
    fresh_events: int = Field(description="Events indexed since that day (the lake and the stream).")


class FeatureInfo(BaseModel):
    feature: str
    name: str
    version: int
    lifecycle: str
    owner: str
    event_types: list[str]
    max_length: int = Field(description="N: the longest sequence the feature keeps.")
    window_days: int
    fields: list[str] = Field(description="The fields a request may ask for.")
    schema_: dict[str, str] = Field(alias="schema", description="The type of each field.")
    freshness: Freshness
    completeness: Completeness


class Features(BaseModel):
    features: list[FeatureInfo] = Field(description="The features the caller may read.")


class Health(BaseModel):
    status: Literal["ok"]
    features: dict[str, int] = Field(description="Users in each feature's snapshot.")
    snapshot_days: dict[str, str] = Field(description="Each feature's snapshot day.")
    stream_tail: bool
    shard: str | None = Field(default=None, description='"I/N" when the server serves one shard of the users.')
    tenants: Literal["local"] | int = Field(description='"local" without a tenants file, else how many tenants.')


# ---- the document ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    """One route of the API: what registers it and what documents it."""

    method: str
    path: str
    handler: Callable
    summary: str
    path_params: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None  # None: any JSON object, or text with media_type
    media_type: str = "application/json"
    errors: tuple[int, ...] = ()  # besides the 401 and 403 of a keyed endpoint
    keyed: bool = False  # needs an X-API-Key when tenants are configured


ERRORS = {400: "A parameter or the body is not what the endpoint takes.",
          401: "The X-API-Key header is missing or not a tenant's.",
          403: "The tenant may not read the feature.",
          404: "No such feature.",
          421: "This shard does not own the user(s): the body names the owner shard (and its URL).",
          429: "The tenant has its max_concurrency requests in flight."}


def openapi(endpoints: list[Endpoint], features: list[str], keyed: bool, title: str = "seqplat serving") -> dict:
    """The OpenAPI 3.1 document of ``endpoints``; ``features`` the values ``{feature}`` takes, ``keyed``
    whether tenants are configured (an X-API-Key on the endpoints that need one)."""
    models = {m for e in endpoints for m in (e.body, e.response) if m is not None} | {Error}
    if any(421 in e.errors for e in endpoints):
        models.add(Misdirected)
    refs, defs = models_json_schema([(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
                                    ref_template=REF)
    paths: dict[str, dict] = {}
    for e in endpoints:
        op: dict = {"summary": e.summary, "operationId": e.handler.__name__, "parameters": []}
        for where, model in (("path", e.path_params), ("query", e.query)):
            op["parameters"] += _parameters(model, where, features) if model else []
        if e.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": refs[(e.body, "validation")]}}}
        ok = {"type": "string"} if e.media_type != "application/json" else (
            refs[(e.response, "validation")] if e.response else {"type": "object"})
        op["responses"] = {"200": {"description": "OK", "content": {e.media_type: {"schema": ok}}}}
        # With tenants: a key to give (401), and a feature the tenant may not read (403).
        auth = ((401, 403) if e.path_params else (401,)) if e.keyed and keyed else ()
        errors = sorted({*e.errors, *auth})
        if e.keyed and keyed:
            op["security"] = [{"apiKey": []}]
        for status in errors:
            model = Misdirected if status == 421 else Error
            op["responses"][str(status)] = {"description": ERRORS[status], "content": {"application/json": {
                "schema": refs[(model, "validation")]}}}
        if not op["parameters"]:
            del op["parameters"]
        paths.setdefault(e.path, {})[e.method.lower()] = op
    components: dict = {"schemas": defs.get("$defs", {})}
    if keyed:
        components["securitySchemes"] = {"apiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER,
                                                    "description": "A tenant's key (the tenants file)."}}
    return {"openapi": "3.1.0",
            "info": {"title": title, "version": "1", "description": (
                "Users' sequences of events, as of now or any time before. A path the API has no route for "
                "is a 404, a method it does not take a 405 (with Allow); every error is an Error object.")},
            "paths": paths, "components": components}


def _parameters(model: type[BaseModel], where: str, features: list[str]) -> list[dict]:
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema["properties"].items():
        prop = _not_null({k: v for k, v in prop.items() if k not in ("title", "default")})
        description = prop.pop("description", None)
        if where == "path" and name == "feature":
            prop["enum"] = features
        param = {"name": name, "in": where, "required": where == "path" or name in required, "schema": prop}
        if description:
            param["description"] = description
        out.append(param)
    return out


def _not_null(schema: dict) -> dict:
    """A parameter's schema without the ``null`` of its Optional: a query leaves it out instead."""
    branches = [s for s in schema.get("anyOf", ()) if s.get("type") != "null"]
    if "anyOf" not in schema or len(branches) == len(schema["anyOf"]):
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**branches[0], **rest} if len(branches) == 1 else {**rest, "anyOf": branches}
