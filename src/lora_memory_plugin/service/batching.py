"""Micro-batching of concurrent questions: one ``ask_many`` call for what arrived together.

Questions from many clients wait here a few milliseconds; those with the same mode and limits
then go through :meth:`LoRAMemory.ask_many` together, which routes each on its own and runs the
rows (each with its own namespace and module, or none) through one stacked multi-LoRA forward.
One batch runs at a time (one model); questions that arrive while it runs form the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..types import Answer

logger = logging.getLogger(__name__)

AskMany = Callable[..., list[Answer]]


@dataclass
class _Pending:
    namespace: str
    question: str
    mode: str
    k: int | None
    max_new_tokens: int | None
    future: asyncio.Future[Answer] = field(repr=False)

    @property
    def group(self) -> tuple[str, int | None, int | None]:
        return (self.mode, self.k, self.max_new_tokens)


class AskBatcher:
    """Gathers concurrent questions into batches for ``ask_many``.

    Args:
        ask_many: ``LoRAMemory.ask_many`` (namespaces, questions, mode, k=, max_new_tokens=,
            batch_size=).
        max_batch: the most questions in one batch (rows of one forward pass).
        wait_s: how long the first question of a batch waits for company.
    """

    def __init__(self, ask_many: AskMany, *, max_batch: int = 16, wait_s: float = 0.005):
        self._ask_many = ask_many
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.questions = 0

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="lora-memory-ask-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def ask(
        self, namespace: str, question: str, mode: str, k: int | None, max_new_tokens: int | None
    ) -> Answer:
        if self._queue is None:
            raise RuntimeError("AskBatcher.start() was not awaited (the app's lifespan runs it)")
        fut: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(namespace, question, mode, k, max_new_tokens, fut))
        return await fut

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.wait_s
            while len(batch) < self.max_batch:
                left = deadline - loop.time()
                try:
                    if left <= 0:  # past the wait: take only what is already queued
                        batch.append(self._queue.get_nowait())
                    else:
                        batch.append(await asyncio.wait_for(self._queue.get(), left))
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
            groups: dict[tuple[str, int | None, int | None], list[_Pending]] = {}
            for p in batch:
                groups.setdefault(p.group, []).append(p)
            for items in groups.values():
                await self._answer(items)

    async def _answer(self, items: Sequence[_Pending]) -> None:
        live = [p for p in items if not p.future.done()]  # a client that left is skipped
        if not live:
            return
        mode, k, max_new = live[0].group
        try:
            answers = await asyncio.to_thread(
                self._ask_many,
                [p.namespace for p in live],
                [p.question for p in live],
                mode,
                k=k,
                max_new_tokens=max_new,
                batch_size=self.max_batch,
            )
        except Exception as e:  # one bad question must not fail the others: ask them alone
            if len(live) == 1:
                _settle(live[0], error=e)
                return
            for p in live:
                await self._answer([p])
            return
        self.batches += 1
        self.questions += len(live)
        for p, a in zip(live, answers, strict=True):
            _settle(p, answer=a)


def _settle(
    p: _Pending, *, answer: Answer | None = None, error: BaseException | None = None
) -> None:
    if p.future.done():
        return
    if error is not None:
        p.future.set_exception(error)
    else:
        assert answer is not None
        p.future.set_result(answer)
