"""The router deployment: kaon's OpenAI-compatible HTTP API in front of the model replicas.

Requests are parsed and validated with vLLM's own protocol models and error handlers, so a
bad parameter gets the same 400 (with ``param``) that `vllm serve` gives. ``model`` picks the
model deployment; each call goes through that deployment's handle, whose request router
picks the replica. Errors keep the OpenAI shape: before a stream starts as a JSON body with
the right status, after it starts as a ``data: {"error": ...}`` event and ``data: [DONE]``.
With API keys configured, the key is checked before the body's fields (401 otherwise) and
names the tenant whose cache salt the request carries (``deployments/auth.py``).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import AsyncIterator
from http import HTTPStatus

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.entrypoints.openai.completion.protocol import CompletionRequest
from vllm.entrypoints.serve.engine.protocol import ErrorInfo, ErrorResponse, ModelCard, ModelList
from vllm.entrypoints.serve.exception_handling.register import init_exception_handler
from vllm.entrypoints.serve.utils.api_utils import validate_json_request

from kaon.config import KaonConfig, ModelConfig
from kaon.deployments.auth import ApiKeys, Unauthorized
from kaon.engine.model_source import resolve_model_path
from kaon.routing.prompt_keys import PromptKeys, block_size_tokens
from kaon.routing.snapshot import RoutingRequest

logger = logging.getLogger("ray.serve")

RETRY_AFTER_S = 1

app = FastAPI(title="kaon", description="OpenAI-compatible API served by kaon on Ray Serve.")
app.state.args = argparse.Namespace(log_error_stack=False)
init_exception_handler(app)


def error_response(status: HTTPStatus | int, message: str, param: str | None = None) -> ErrorResponse:
    status = HTTPStatus(status)
    return ErrorResponse(error=ErrorInfo(message=message, type=_error_type(status), param=param, code=status.value))


def _error_type(status: HTTPStatus) -> str:
    """`NotFoundError`, `ServiceUnavailableError`, `InternalServerError`: the names vLLM uses."""
    name = status.phrase.replace(" ", "")
    return name if name.endswith("Error") else name + "Error"


def _json_error(error: ErrorResponse, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.model_dump(), status_code=error.error.code, headers=headers)


@app.exception_handler(Unauthorized)
async def _unauthorized(request: Request, error: Unauthorized) -> JSONResponse:
    return _json_error(error_response(HTTPStatus.UNAUTHORIZED, str(error)), headers={"WWW-Authenticate": "Bearer"})


def authorize(request: Request) -> None:
    """Sets ``request.state.tenant`` from the API key (None when kaon has no keys)."""
    keys: ApiKeys | None = serve.get_replica_context().servable_object.api_keys
    request.state.tenant = keys.tenant(request.headers.get("authorization")) if keys else None


def _sse_error(error: ErrorResponse) -> str:
    return f"data: {error.model_dump_json()}\n\ndata: [DONE]\n\n"


async def _stream(first: str, rest: DeploymentResponseGenerator, model: str) -> AsyncIterator[str]:
    """Relay the SSE chunks; a failure after the first chunk ends the stream with an error event."""
    yield first
    try:
        async for chunk in rest:
            yield chunk
    except Exception as error:  # noqa: BLE001
        logger.exception("stream from model %s failed", model)
        yield _sse_error(error_response(HTTPStatus.INTERNAL_SERVER_ERROR, f"Model `{model}` failed mid-stream: {type(error).__name__}"))


async def _read_to_end(stream: DeploymentResponseGenerator) -> None:
    """A whole answer is the stream's only item. Serve reports a request complete to the
    request router (its in-flight count) when the stream ends, so it is read to its end: left
    open, the count lagged one or two requests behind and a prefix holder looked busy."""
    async for _ in stream:
        pass


def _prompt_keys(model: ModelConfig, device: str) -> PromptKeys:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(model.source))
    return PromptKeys(tokenizer, block_size_tokens(model, device))


def _single_prompt(request: CompletionRequest) -> str | list[int] | None:
    """The one prompt of a completion request; None for batches (routed without prefix keys)."""
    prompt = request.prompt
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return prompt
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        return prompt[0]
    return None


# Serve pickles the ingress class with the FastAPI app when the decorator runs, so every
# module-level helper the endpoints use must be defined above this line.
@serve.ingress(app)
class Router:
    def __init__(self, config: KaonConfig, models: dict[str, DeploymentHandle], device: str, api_keys: ApiKeys | None = None):
        self.api_keys = api_keys
        self._config = config
        self._models = {name: handle.options(stream=True) for name, handle in models.items()}
        self._keys = {m.name: _prompt_keys(m, device) for m in config.models if m.routing.policy == "prefix_load"}

    @app.get("/health")
    async def health(self) -> Response:
        return Response(status_code=HTTPStatus.OK)

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def list_models(self) -> ModelList:
        cards = [
            ModelCard(id=m.name, root=m.source, owned_by="kaon", max_model_len=m.engine.max_model_len)
            for m in self._config.models
        ]
        return ModelList(data=cards)

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize), Depends(validate_json_request)])
    async def chat(self, request: ChatCompletionRequest, raw_request: Request) -> Response:
        self._salt(request, raw_request.state.tenant)
        keys = self._keys.get(request.model)
        routing = keys.for_chat(request.request_id, request.messages, request.cache_salt) if keys else None
        return await self._dispatch(request.model, "chat", request, routing)

    @app.post("/v1/completions", dependencies=[Depends(authorize), Depends(validate_json_request)])
    async def completion(self, request: CompletionRequest, raw_request: Request) -> Response:
        self._salt(request, raw_request.state.tenant)
        keys, prompt = self._keys.get(request.model), _single_prompt(request)
        routing = keys.for_prompt(request.request_id, prompt, request.cache_salt) if keys and prompt is not None else None
        return await self._dispatch(request.model, "completion", request, routing)

    def _salt(self, request: ChatCompletionRequest | CompletionRequest, tenant: str | None) -> None:
        if tenant is not None:
            request.cache_salt = self.api_keys.cache_salt(tenant, request.cache_salt)

    async def _dispatch(self, model: str, method: str, request: BaseModel, routing: RoutingRequest | None) -> Response:
        handle = self._models.get(model)
        if handle is None:
            return _json_error(error_response(HTTPStatus.NOT_FOUND, f"The model `{model}` does not exist.", "model"))
        stream: DeploymentResponseGenerator = getattr(handle, method).remote(request, routing=routing)
        try:
            first = await stream.__anext__()
        except BackPressureError:
            busy = error_response(HTTPStatus.SERVICE_UNAVAILABLE, f"Model `{model}` is at capacity; retry shortly.")
            return _json_error(busy, headers={"Retry-After": str(RETRY_AFTER_S)})
        except StopAsyncIteration:
            return _json_error(error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "The replica returned no response."))
        except Exception as error:  # noqa: BLE001 - every failure must reach the client in OpenAI shape
            logger.exception("request to model %s failed", model)
            return _json_error(error_response(HTTPStatus.SERVICE_UNAVAILABLE, f"Model `{model}` failed: {type(error).__name__}"))
        if isinstance(first, BaseModel):
            await _read_to_end(stream)
            return _json_error(first) if isinstance(first, ErrorResponse) else JSONResponse(first.model_dump())
        return StreamingResponse(_stream(first, stream, model), media_type="text/event-stream")
