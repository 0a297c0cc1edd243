"""The memory as MCP tools (Model Context Protocol, the official ``mcp`` SDK v2).

An agent that speaks MCP gets five tools over one store: ``remember`` (store a fact as a user
turn), ``search`` (the buffer, best first), ``recall`` (what the consolidated modules hold),
``ask`` (an answer from memory) and ``forget`` (delete records, from the modules too).

- :func:`build_mcp_server`: the server, its tools restricted by an ``allowed(namespace)`` check.
- :func:`mount_mcp`: the streamable-HTTP endpoint at ``/mcp`` of the service app, behind the
  same API keys as the REST routes (``Authorization: Bearer <key>`` or ``X-API-Key``): 401
  without a valid key, and each request's tools may use only its key's namespaces.
- :func:`run_stdio`: every namespace of a local store over stdin/stdout
  (``lora-memory mcp DIR``; the local process runs with its user's own rights).

A store error reaches the agent as a tool error (``is_error``) whose text names the error's
class and carries its message (``... PermissionDeniedError: namespace 'x' is not granted ...``);
the store's work runs on worker threads, never on the event loop.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import anyio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from pydantic import Field
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .. import errors
from .._version import __version__
from ..memory import LoRAMemory
from ..types import Answer, Mode
from .auth import authenticate
from .http import error_body, provenance, status_for
from .keys import Grant, KeyRing

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["MCP_PATH", "build_mcp_server", "mount_mcp", "run_stdio"]

MCP_PATH = "/mcp"
"""Where :func:`mount_mcp` serves streamable HTTP on the service app."""

Allowed = Callable[[str], bool]
"""Whether the caller may use a namespace."""
BatchedAsk = Callable[[str, str, str, "int | None", "int | None"], Awaitable[Answer]]
"""``AskBatcher.ask``: namespace, question, mode, k, max_new_tokens."""

T = TypeVar("T")

INSTRUCTIONS = """\
Long-term memory, kept per namespace (a user, a team, a project: any string you are told to \
use; always pass the same one for the same person). Call `remember` with one self-contained \
fact or statement at a time ("Alice's locker code is 4471"), `search` to find stored text \
by meaning, `ask` to get an answer grounded in memory, `recall` to see what the trained \
memory modules hold without retrieval, and `forget` to delete records by the ids that \
`remember` and `search` return. Errors name their kind first (e.g. PermissionDeniedError when \
the namespace is not yours to use)."""

NamespaceArg = Annotated[
    str,
    Field(
        description="The memory namespace to use (e.g. 'user-42'): whose memory this is. "
        "Every call about the same person or project must use the same namespace."
    ),
]


def build_mcp_server(
    mem: LoRAMemory, *, allowed: Allowed | None = None, batched_ask: BatchedAsk | None = None
) -> MCPServer:
    """An MCP server whose tools work on ``mem``.

    Args:
        mem: the open store.
        allowed: called with the namespace of each tool call before anything runs; False
            refuses the call (a ``PermissionDeniedError`` tool error naming the namespace).
            None allows every namespace.
        batched_ask: the service's micro-batcher (``AskBatcher.ask``): questions asked through
            MCP then share forward passes with the REST and OpenAI ones. None: ``mem.ask``.
    """
    check: Allowed = allowed if allowed is not None else _everything
    server: MCPServer = MCPServer(
        "lora-memory",
        title="lora-memory",
        description="Parametric memory for LLM agents: a searchable buffer plus LoRA modules.",
        instructions=INSTRUCTIONS,
        version=__version__,
        log_level="WARNING",  # it configures root logging only where nothing else did
    )

    async def run(namespace: str, work: Callable[[], T]) -> T:
        """``work()`` on a worker thread once ``namespace`` is allowed; typed store errors
        become tool errors that carry their message."""
        return await run_async(namespace, lambda: anyio.to_thread.run_sync(work))

    async def run_async(namespace: str, work: Callable[[], Awaitable[T]]) -> T:
        try:
            if not check(namespace):
                raise errors.PermissionDeniedError(
                    f"namespace {namespace!r} is not granted to this caller (its API key may "
                    "use only the namespaces it was created for)"
                )
            return await work()
        except errors.LoraMemoryError as e:
            raise ToolError(f"{type(e).__name__}: {e}") from e

    @server.tool(
        title="Remember",
        description=(
            "Store one piece of information in long-term memory, as something the user said. "
            "Write it as a self-contained statement that makes sense on its own later "
            '("Alice\'s locker code is 4471", not "it\'s 4471"); store separate facts in '
            "separate calls. Storing the same text again is harmless (same id). Returns the "
            "record id, which `forget` takes."
        ),
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=True
        ),
    )
    async def remember(
        namespace: NamespaceArg,
        text: Annotated[str, Field(description="The fact or statement to remember.")],
        session_id: Annotated[
            str | None,
            Field(description="Optional conversation id to group turns of one session."),
        ] = None,
    ) -> dict[str, Any]:
        rid = await run(
            namespace,
            lambda: mem.add_turn(namespace, text, role="user", session_id=session_id),
        )
        return {"id": rid, "namespace": namespace}

    @server.tool(
        title="Search memory",
        description=(
            "Semantic search of the stored records of a namespace: the k closest by meaning, "
            "best first, each with its id, text, score (cosine similarity, higher is closer) "
            "and metadata (role, session_id, created_at, status, ...). Use it to look up what "
            "was stored, or to find ids to forget."
        ),
        annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True),
    )
    async def search(
        namespace: NamespaceArg,
        query: Annotated[str, Field(description="What to look for, in natural language.")],
        k: Annotated[int, Field(ge=1, le=100, description="How many results (1-100).")] = 5,
    ) -> dict[str, Any]:
        hits = await run(namespace, lambda: mem.search(namespace, query, k))
        return {"hits": [h.to_dict() for h in hits]}

    @server.tool(
        title="Recall from trained memory",
        description=(
            "What the namespace's trained memory modules (facts consolidated into LoRA "
            "adapters) recall for a query, with no retrieved text in the prompt. Returns the "
            "text, the modules that answered, the router's confidence and why; text is '' and "
            "confidence 0 when no module matches (e.g. nothing consolidated yet: use `search` "
            "or `ask` then)."
        ),
        annotations=ToolAnnotations(read_only_hint=True),
    )
    async def recall(
        namespace: NamespaceArg,
        query: Annotated[str, Field(description="The question or cue to recall for.")],
    ) -> dict[str, Any]:
        result = await run(namespace, lambda: mem.recall(namespace, query))
        return result.to_dict()

    @server.tool(
        title="Ask memory",
        description=(
            "Answer a question from the namespace's memory with the memory's own language "
            "model. mode 'auto' (the default) chooses per question between the trained "
            "modules ('lora'), modules plus retrieved records ('hybrid') and retrieved records "
            "only ('rag'); 'icl' puts the whole namespace in context and 'base' uses no memory. "
            "Returns the answer text, the mode that answered, the modules used, notes (e.g. "
            "why a mode fell back) and the records placed in context (sources)."
        ),
        annotations=ToolAnnotations(read_only_hint=True),
    )
    async def ask(
        namespace: NamespaceArg,
        question: Annotated[str, Field(description="The question to answer.")],
        mode: Annotated[Mode, Field(description="How to answer; 'auto' unless told.")] = "auto",
    ) -> dict[str, Any]:
        if batched_ask is None:
            answer = await run(namespace, lambda: mem.ask(namespace, question, mode))
        else:
            ask_it = batched_ask
            answer = await run_async(
                namespace, lambda: ask_it(namespace, question, mode, None, None)
            )
        return {"text": answer.text, **provenance(answer)}

    @server.tool(
        title="Forget",
        description=(
            "Delete records by id (ids from `remember` or `search`) from the namespace: from "
            "the searchable buffer, and every trained module that held one is removed at "
            "once, so nothing answers from them any more. The other records of those modules "
            "stay stored and searchable and are trained again at the next consolidation. "
            "Returns how many were deleted, the ids the namespace did not hold and the "
            "modules removed."
        ),
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=True
        ),
    )
    async def forget(
        namespace: NamespaceArg,
        ids: Annotated[list[str], Field(min_length=1, description="The record ids to delete.")],
    ) -> dict[str, Any]:
        report = await run(namespace, lambda: mem.forget(namespace, ids, rebuild=False))
        return report.to_dict()

    return server


def run_stdio(mem: LoRAMemory) -> None:
    """Serve every namespace of ``mem`` over stdin/stdout until the client closes stdin.

    No namespace check: the client started this process, which runs with its user's rights
    over the store anyway. While serving, the SDK points file descriptor 1 at stderr, so
    stray output cannot corrupt the protocol.
    """
    build_mcp_server(mem).run("stdio")


# ---- streamable HTTP on the service app -------------------------------------------------

_grant: contextvars.ContextVar[Grant | None] = contextvars.ContextVar(
    "lora_memory_mcp_grant", default=None
)
"""The grant of the HTTP request being served. The SDK runs each tool call in the context of
the request that carried it, so this is per request, also within one MCP session."""


def _granted(namespace: str) -> bool:
    g = _grant.get()
    return g is not None and g.allows(namespace)  # no grant in context: refuse


LOOPBACK = TransportSecuritySettings(
    enable_dns_rebinding_protection=True,
    allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
    allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
)
"""Without keys the service is on loopback only: refuse other Host and Origin headers too,
so a web page cannot reach the keyless endpoint through DNS rebinding."""


def mount_mcp(
    app: FastAPI, mem: LoRAMemory, keys: KeyRing | None, *, path: str = MCP_PATH
) -> MCPServer:
    """Serve the MCP tools over streamable HTTP at ``path`` of ``app`` (from ``create_app``).

    Each request is authenticated with ``keys`` as the REST routes are (401 with the same
    JSON error body without a valid key) and its tool calls may use only its key's
    namespaces; an MCP session stays bound to the key that opened it. ``keys=None`` serves
    every namespace without keys (loopback Host and Origin only). The session manager runs
    while the app does (``app.state.lifespans``). Returns the MCP server.
    """
    server = build_mcp_server(mem, allowed=_granted, batched_ask=app.state.batcher.ask)
    security = (
        LOOPBACK
        if keys is None
        else TransportSecuritySettings(
            enable_dns_rebinding_protection=False  # a request needs a key: a page has none
        )
    )
    # builds the session manager (the Starlette app it returns is not used: the route below
    # puts the manager behind the key check instead)
    server.streamable_http_app(streamable_http_path=path, transport_security=security)
    manager = server.session_manager
    app.router.routes.append(Route(path, endpoint=_KeyedEndpoint(manager, keys), name="mcp"))
    app.state.lifespans.append(manager.run)
    return server


class _KeyedEndpoint:
    """ASGI: the request's API key checked, its grant set for the tools, then the SDK's
    session manager."""

    def __init__(self, manager: StreamableHTTPSessionManager, keys: KeyRing | None) -> None:
        self.manager = manager
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            g = await self._authenticate(Headers(scope=scope))
        except errors.LoraMemoryError as e:
            code = status_for(e)
            headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
            body = error_body(type(e).__name__, str(e), code)
            await JSONResponse(body, code, headers=headers)(scope, receive, send)
            return
        # the manager binds each session to the user that opened it (a session id presented
        # with another key answers 404)
        token = AccessToken(token=g.key_id, client_id=g.key_id, scopes=[])
        scope = {**scope, "user": AuthenticatedUser(token)}
        reset = _grant.set(g)
        try:
            await self.manager.handle_request(scope, receive, send)
        finally:
            _grant.reset(reset)

    async def _authenticate(self, headers: Headers) -> Grant:
        keys = self.keys  # the key file is read: off the event loop
        return await anyio.to_thread.run_sync(lambda: authenticate(keys, headers))


def _everything(namespace: str) -> bool:
    return True
