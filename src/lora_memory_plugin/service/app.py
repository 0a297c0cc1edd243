"""The REST app: every core operation of one store, behind API keys granted namespaces.

One process owns the store, the base model and the resident adapters; many clients share
them. Each route that touches a namespace takes it from the URL
(``/v1/namespaces/{namespace}/...``, percent-encoded) and checks it against the request's key
before anything runs; the body never names a namespace. Errors come back as
``{"error": {"type": <error class>, "message": ..., "status": <code>}}``, the classes of
:mod:`lora_memory_plugin.errors` (which :class:`~lora_memory_plugin.remote.RemoteMemory`
raises again on the client side). Writes return once the buffer has them.

The OpenAPI schema is at ``/openapi.json`` and the interactive docs at ``/docs``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import errors
from .._version import __version__
from ..consolidation.service import check_options, standing_alone
from ..memory import LoRAMemory
from ..registry.modules import ModuleManifest
from .auth import Grantee, Namespace, check_namespace
from .batching import AskBatcher
from .http import BodyLimit, error_body, status_for
from .jobs import JobRunner, Schedule
from .keys import KeyRing
from .mcp import mount_mcp
from .openai_compat import add_openai_routes
from .schemas import (
    AskIn,
    AskManyIn,
    ChatIn,
    ConsolidateIn,
    CountIn,
    DeleteIn,
    DocumentIn,
    ForgetIn,
    GenerateIn,
    GetIn,
    MetadataIn,
    QueryIn,
    SearchIn,
    TurnsIn,
)

logger = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset(
    {"/v1/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)
"""Routes that need no key: liveness and the API's own description."""

SERVER_ONLY = (
    "chroma_url",
    "chroma_database",
    "chroma_auth",
    "chroma_token_header",
    "chroma_ca_file",
)
"""``[buffer]`` settings ``/v1/config`` keeps to the server: where Chroma is and how to log in."""


def create_app(
    mem: LoRAMemory,
    keys: KeyRing | None,
    *,
    max_batch: int = 16,
    batch_wait_s: float = 0.005,
    consolidate_every: float | None = None,
    min_new_records: int = 8,
    schedules: Sequence[Schedule] = (),
    max_body_bytes: int | None = None,
) -> FastAPI:
    """The service app over an open store.

    Args:
        mem: the store this process owns.
        keys: the accepted API keys; None serves without keys (every namespace, for any
            caller: ``lora-memory serve --no-auth`` allows that on loopback only).
        max_batch: the most questions answered in one forward pass.
        batch_wait_s: how long a question waits for others to share its batch.
        consolidate_every: seconds between checks for namespaces to consolidate in the
            background (None: only when a client asks).
        min_new_records: buffered records that make a namespace due at a check.
        schedules: per-pattern check intervals and minimums (the first match wins; the two
            settings above for the namespaces none matches).
        max_body_bytes: the largest request body read (413 ``TextTooLargeError`` above it);
            default: room for the largest document the store accepts, JSON-escaped.
    """
    if max_body_bytes is None:
        max_body_bytes = 6 * mem.config.buffer.max_document_chars + (1 << 20)
    batcher = AskBatcher(mem.ask_many, max_batch=max_batch, wait_s=batch_wait_s)
    jobs = JobRunner(
        mem, every_s=consolidate_every, min_records=min_new_records, schedules=schedules
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await batcher.start()
            stack.push_async_callback(batcher.stop)
            await jobs.start()
            stack.push_async_callback(jobs.stop)
            for enter in app.state.lifespans:  # what mounted parts run while the app runs
                await stack.enter_async_context(enter())
            yield

    app = FastAPI(
        title="lora-memory",
        version=__version__,
        summary="Parametric memory for LLM agents: a Chroma buffer plus routed LoRA modules.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.state.memory = mem
    app.state.keys = keys
    app.state.batcher = batcher
    app.state.jobs = jobs
    # async context manager factories entered at start-up and left at shut-down, in order: a
    # mounted part that needs a running task (the MCP session manager) adds one
    app.state.lifespans = []

    @app.exception_handler(errors.LoraMemoryError)
    async def typed_error(request: Request, exc: errors.LoraMemoryError) -> JSONResponse:
        code = status_for(exc)
        if code >= 500:
            logger.error("%s %s failed: %r", request.method, request.url.path, exc)
        headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
        return JSONResponse(error_body(type(exc).__name__, str(exc), code), code, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # the framework's own refusals (no such route, wrong method) in the typed errors' shape
        kind = "InvalidInputError" if exc.status_code < 500 else "LoraMemoryError"
        message = f"{request.method} {request.url.path}: {exc.detail}"
        body = error_body(kind, message, exc.status_code)
        return JSONResponse(body, exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        message = "invalid request: " + "; ".join(parts)
        return JSONResponse(error_body("InvalidInputError", message, 422), 422)

    add_openai_routes(app)  # /v1/models, /v1/chat/completions
    mount_mcp(app, mem, keys)  # /mcp: the MCP tools over streamable HTTP, behind the same keys

    # ---- store-wide ----------------------------------------------------------------------
    @app.get("/v1/health", tags=["service"])
    def health() -> dict[str, Any]:
        """Liveness (no key needed), and how questions were batched so far."""
        batching = {"batches": batcher.batches, "questions": batcher.questions}
        return {"status": "ok", "version": __version__, "batching": batching}

    @app.get("/v1/namespaces", tags=["store"])
    def namespaces(g: Grantee) -> dict[str, Any]:
        """The namespaces with records that this key may use."""
        return {"namespaces": [n for n in mem.namespaces() if g.allows(n)]}

    @app.get("/v1/status", tags=["store"])
    def status(g: Grantee) -> dict[str, Any]:
        """Record and module counts of the namespaces this key may use; model readiness."""
        d = mem.status().to_dict()
        d["namespaces"] = [n for n in d["namespaces"] if g.allows(n["namespace"])]
        d["records"] = sum(n["records"] for n in d["namespaces"])
        return d

    @app.get("/v1/config", tags=["store"])
    def config(g: Grantee) -> dict[str, Any]:
        """The store's settings, without how the service reaches Chroma (URL, database,
        credentials stay on the server)."""
        d = mem.config.to_dict()
        for key in SERVER_ONLY:
            d["buffer"].pop(key, None)
        return d

    @app.get("/v1/model", tags=["answer"])
    def model(g: Grantee) -> dict[str, Any]:
        """The base model: its name and context window (loads it on first use)."""
        gen = mem.generator()
        return {"base_model": mem.config.models.base_model, "context_window": gen.context_window}

    @app.post("/v1/generate", tags=["answer"])
    def generate(g: Grantee, body: GenerateIn) -> dict[str, Any]:
        """The base model alone on a conversation: no memory, no namespace (what a framework's
        plain LLM call needs)."""
        messages = [m.model_dump() for m in body.messages]
        out = mem.generator().chat(messages, max_new_tokens=body.max_new_tokens)
        return dataclasses.asdict(out)

    # ---- writes --------------------------------------------------------------------------
    prefix = "/v1/namespaces/{namespace:path}"

    @app.post(f"{prefix}/turns", tags=["write"])
    def add_turns(ns: Namespace, body: TurnsIn) -> dict[str, Any]:
        """Store conversation turns (all or none); returns their record ids, in order."""
        turns = [t.model_dump(exclude_unset=True) for t in body.turns]
        return {"ids": mem.add_turns(ns, turns)}

    @app.post(f"{prefix}/documents", tags=["write"])
    def add_document(ns: Namespace, body: DocumentIn) -> dict[str, Any]:
        """Chunk and store a document; returns one record id per chunk."""
        fields = body.model_dump(exclude_unset=True, exclude={"text"})
        return {"ids": mem.add_document(ns, body.text, **fields)}

    @app.post(f"{prefix}/records/delete", tags=["write"])
    def delete(ns: Namespace, body: DeleteIn) -> dict[str, Any]:
        """Delete records from the buffer (modules forget them at the next consolidate; use
        forget to remove them from the modules now)."""
        return {"deleted": mem.delete(ns, body.ids)}

    @app.post(f"{prefix}/records/metadata", tags=["write"])
    def update_metadata(ns: Namespace, body: MetadataIn) -> dict[str, Any]:
        """Set user metadata keys on records."""
        mem.update_metadata(ns, body.ids, body.metadata)
        return {"updated": len(body.ids)}

    # ---- reads ---------------------------------------------------------------------------
    @app.post(f"{prefix}/search", tags=["read"])
    def search(ns: Namespace, body: SearchIn) -> dict[str, Any]:
        """Semantic search of the buffer, best first."""
        filters = body.model_dump(exclude_unset=True, exclude={"query", "k"})
        return {"hits": [h.to_dict() for h in mem.search(ns, body.query, body.k, **filters)]}

    @app.post(f"{prefix}/records/get", tags=["read"])
    def get(ns: Namespace, body: GetIn) -> dict[str, Any]:
        """Records by id (in that order) or by filter, paged."""
        options = body.model_dump(exclude_unset=True, exclude={"ids"})
        return {"records": [r.to_dict() for r in mem.get(ns, body.ids, **options)]}

    @app.post(f"{prefix}/records/count", tags=["read"])
    def count(ns: Namespace, body: CountIn) -> dict[str, Any]:
        """How many records the namespace holds (optionally filtered)."""
        return {"count": mem.count(ns, **body.model_dump(exclude_unset=True))}

    @app.get(f"{prefix}/modules", tags=["read"])
    def modules(ns: Namespace) -> dict[str, Any]:
        """The namespace's committed LoRA modules (manifests, oldest first)."""
        return {"modules": [_manifest(m) for m in mem.modules(ns)]}

    # ---- answering -----------------------------------------------------------------------
    @app.post(f"{prefix}/ask", tags=["answer"])
    async def ask(ns: Namespace, body: AskIn) -> dict[str, Any]:
        """Answer a question from the namespace's memory (micro-batched with concurrent
        questions)."""
        answer = await batcher.ask(ns, body.question, body.mode, body.k, body.max_new_tokens)
        return answer.to_dict()

    @app.post("/v1/ask_many", tags=["answer"])
    def ask_many(g: Grantee, body: AskManyIn) -> dict[str, Any]:
        """Answer many questions in one call, each from its own namespace."""
        nss = [check_namespace(g, n) for n in body.namespaces]
        answers = mem.ask_many(
            nss,
            body.questions,
            body.mode,
            k=body.k,
            max_new_tokens=body.max_new_tokens,
            batch_size=body.batch_size,
        )
        return {"answers": [a.to_dict() for a in answers]}

    @app.post(f"{prefix}/chat", tags=["answer"])
    def chat(ns: Namespace, body: ChatIn) -> dict[str, Any]:
        """Answer a conversation with the module routed from its last user message."""
        messages = [m.model_dump() for m in body.messages]
        return mem.chat(ns, messages, mode=body.mode, max_new_tokens=body.max_new_tokens).to_dict()

    @app.post(f"{prefix}/recall", tags=["answer"])
    def recall(ns: Namespace, body: QueryIn) -> dict[str, Any]:
        """What the best-matching module recalls for the query, with no retrieved text."""
        return mem.recall(ns, body.query, max_new_tokens=body.max_new_tokens).to_dict()

    @app.post(f"{prefix}/route", tags=["answer"])
    def route(ns: Namespace, body: QueryIn) -> dict[str, Any]:
        """The routing decision for the query: ranked modules, the chosen one and why."""
        return mem.route(ns, body.query).to_dict()

    # ---- consolidation -------------------------------------------------------------------
    @app.post(f"{prefix}/consolidate", tags=["consolidation"], response_model=None)
    def consolidate(ns: Namespace, body: ConsolidateIn) -> Any:
        """Train the namespace's buffered records into modules: to the end (409 while another
        process consolidates the namespace), or with ``"wait": false`` as a background job
        (202 and the job; see ``/v1/jobs``)."""
        if not body.wait:
            job = jobs.submit(ns, options=body.options)
            return JSONResponse({"job": job.to_dict()}, 202)
        reports = mem.consolidate(ns, **body.options)
        return {"reports": [r.to_dict() for r in reports]}

    @app.post("/v1/consolidate", tags=["consolidation"])
    def consolidate_all(g: Grantee, body: ConsolidateIn) -> dict[str, Any]:
        """Every namespace this key may use, one after another, each standing alone (as
        ``consolidate --all``): a namespace another process holds is ``locked``, one that
        fails is ``failed``, and the others go on."""
        granted = sorted(ns for ns in mem.namespaces() if g.allows(ns))
        if not body.wait:
            return {"jobs": [jobs.submit(ns, options=body.options).to_dict() for ns in granted]}
        check_options(body.options)  # bad options are the request's fault: 422, not per namespace

        def one(ns: str) -> dict[str, Any]:
            return standing_alone(ns, lambda: mem.consolidate(ns, **body.options)[0]).to_dict()

        return {"reports": [one(ns) for ns in granted]}

    @app.get("/v1/jobs", tags=["consolidation"])
    def list_jobs(g: Grantee) -> dict[str, Any]:
        """Background consolidation jobs of the namespaces this key may use, oldest first."""
        return {"jobs": [j.to_dict() for j in jobs.jobs() if g.allows(j.namespace)]}

    @app.get("/v1/jobs/{job_id}", tags=["consolidation"])
    def get_job(g: Grantee, job_id: str) -> dict[str, Any]:
        """One job (404 for a job of a namespace this key may not use, as for an unknown one)."""
        return jobs.job(job_id, visible=g.allows).to_dict()

    @app.post(f"{prefix}/forget", tags=["consolidation"])
    def forget(ns: Namespace, body: ForgetIn) -> dict[str, Any]:
        """Delete records from the buffer and the modules that hold them."""
        report = mem.forget(
            ns,
            body.ids,
            where=body.where,
            missing=body.missing,
            rebuild=body.rebuild,
            **body.options,
        )
        return report.to_dict()

    return app


def routes_needing_a_key(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every route a request without a valid key must not reach."""
    out: list[tuple[str, str]] = []
    for r in app.routes:
        path: str = getattr(r, "path", "")
        # an ASGI endpoint (the MCP one) takes every method
        methods: set[str] = getattr(r, "methods", None) or {"GET", "POST", "DELETE"}
        if path in PUBLIC_PATHS:
            continue
        out.extend((m, path) for m in sorted(methods - {"HEAD", "OPTIONS"}))
    return out


def _manifest(m: ModuleManifest) -> dict[str, Any]:
    return dataclasses.asdict(m)  # the namespace as it is (the file packs it as ASCII JSON)
