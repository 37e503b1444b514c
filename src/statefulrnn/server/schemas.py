"""Request and response bodies. The request bodies carry the app's real limits, so they are built per app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, WithJsonSchema, create_model

STREAM_ID = r"^[A-Za-z0-9._:~-]{1,128}$"
MAX_SEQ = 2**62


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StepResponse(BaseModel):
    stream: str
    seq: int = Field(description="the seq the stream's next step request must carry")
    steps: int = Field(description="time steps applied since the stream started or was reset")
    outputs: list[list[float | None]] = Field(description="one row per input step: logits, or forecasts")
    replayed: bool = Field(description="true when this answers a retry from the stored outputs")


class StreamStatus(BaseModel):
    stream: str
    seq: int
    steps: int
    updated_at: float


class Deleted(BaseModel):
    stream: str
    deleted: bool


class GenerateResponse(BaseModel):
    text: str


class ForecastResponse(BaseModel):
    forecast: list[float | None]
    lo: list[float | None] | None = None
    hi: list[float | None] | None = None


class Health(BaseModel):
    status: str
    task: str
    store: str = Field(description="the kind of state store: memory, sqlite or redis")


class ErrorResponse(BaseModel):
    """Every error answer: what went wrong (and, for a seq conflict, the seq the stream expects)."""

    error: str
    expected: int | None = None


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for error status codes, all with the `ErrorResponse` body."""
    why = {
        400: "the body is not valid JSON",
        401: "missing or wrong bearer token",
        404: "no such stream",
        408: "the request body did not arrive in time",
        409: "seq conflict: the body names the seq the stream expects",
        413: "the request asks for more than the server's limits (body bytes, steps, characters, tokens)",
        422: "invalid request",
        429: "too many generations in flight; retry after the Retry-After header's seconds",
        503: "the state store is unavailable",
    }
    return {code: {"model": ErrorResponse, "description": why[code]} for code in codes}


@dataclass(frozen=True)
class Bodies:
    """The request body models of one app."""

    step: type[BaseModel]
    generate: type[BaseModel] | None
    forecast: type[BaseModel] | None

    def exact_schemas(self, openapi: dict[str, Any]) -> dict[str, Any]:
        """`openapi` with these models' schemas as pydantic writes them: FastAPI's OpenAPI model turns
        every `maximum` into a float (20.0; 2**63 - 1 even becomes 2**63), the limits must stay integers."""
        schemas = openapi.get("components", {}).get("schemas", {})
        for model in (self.step, self.generate, self.forecast):
            if model is not None and model.__name__ in schemas:
                schemas[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
        return openapi


def _values_schema(predictor: Any, max_steps: int, *, allow_string: bool) -> dict[str, Any]:
    """The JSON schema of one request's steps: token ids (or a string) for text runs, values or rows for series."""
    if predictor.task == "text":
        item: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": len(predictor.vocab) - 1}
    elif predictor.task_of_run.raw_width == 1:
        item = {"type": "number"}
    else:
        width = predictor.task_of_run.raw_width
        item = {"type": "array", "items": {"type": "number"}, "minItems": width, "maxItems": width}
    array = {"type": "array", "items": item, "minItems": 1, "maxItems": max_steps}
    if not allow_string:
        return array
    string = {"type": "string", "minLength": 1, "maxLength": max_steps, **_alphabet(predictor, 1, max_steps)}
    return {"anyOf": [string, array]}


def _alphabet(predictor: Any, least: int, most: int) -> dict[str, str]:
    """A `pattern` of the characters a character-level vocabulary knows (none for word-level ones)."""
    vocab = predictor.vocab
    chars = [t for t in vocab.tokens if len(t) == 1] if vocab.level == "char" else []
    if not chars or any(ord(c) > 0xFFFF for c in chars):
        return {}
    return {"pattern": "^[" + "".join(f"\\u{ord(c):04x}" for c in chars) + f"]{{{least},{most}}}$"}


def build_bodies(predictor: Any, *, max_steps: int, max_generate: int) -> Bodies:
    """Request models whose schemas state this app's limits (`n`, lengths, the run's horizon).

    Lengths (`inputs`, `prompt`, `history`) and `n` are declared as schema maxima but checked by the
    routes, which answer 413 (not 422) before doing any work; strings count characters.
    """
    text = predictor.task == "text"
    inputs_doc = (
        "token ids or a string (at most max_steps characters)"
        if text
        else "raw values, one per step (rows [value, feature, ...] when the run has features)"
    )
    fields: dict[str, Any] = {
        "seq": (StrictInt, Field(ge=0, le=MAX_SEQ, description="the stream's next seq: 0 for a new stream, then +1")),
        "inputs": (
            Annotated[str | list[Any], WithJsonSchema(_values_schema(predictor, max_steps, allow_string=text))],
            Field(description=inputs_doc),
        ),
    }
    if not text:
        fields["series"] = (str | None, Field(None, max_length=256, description="a trained series for a new stream"))
        fields["position"] = (StrictInt | None, Field(None, ge=0, le=MAX_SEQ, description="a new stream's phase"))
    step = create_model("StepBody", __base__=_Body, **fields)
    if text:
        generate = create_model(
            "GenerateBody",
            __base__=_Body,
            prompt=(
                str,
                Field("", json_schema_extra={"maxLength": max_steps}, description="at most max_steps characters"),
            ),
            n=(
                StrictInt,
                Field(100, ge=0, json_schema_extra={"maximum": max_generate}, description="tokens to generate"),
            ),
            temperature=(StrictFloat, Field(1.0, ge=0, le=100, allow_inf_nan=False, description="0: greedy")),
            top_k=(StrictInt | None, Field(None, ge=1, le=2**31)),
            top_p=(StrictFloat | None, Field(None, gt=0, le=1, allow_inf_nan=False)),
            seed=(StrictInt | None, Field(None, ge=0, le=2**63 - 1)),
        )
        return Bodies(step, generate, None)
    forecast = create_model(
        "ForecastBody",
        __base__=_Body,
        history=(
            Annotated[list[Any], WithJsonSchema(_values_schema(predictor, max_steps, allow_string=False))],
            Field(description="raw values (or rows [value, feature, ...]), oldest first"),
        ),
        series=(str | None, Field(None, max_length=256, description="the trained series whose transform to use")),
        horizon=(StrictInt | None, Field(None, ge=1, le=int(predictor.spec.horizon), description="at most the run's")),
        position=(
            StrictInt | None,
            Field(None, ge=0, le=MAX_SEQ, description="the phase of the history's first value"),
        ),
    )
    return Bodies(step, None, forecast)
