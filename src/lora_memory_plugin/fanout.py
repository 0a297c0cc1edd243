"""Consolidation fanned out on Ray: one task per namespace (``consolidate --all --ray``).

Every task opens the same store (a Chroma server, or embedded Chroma on storage every node
sees, plus the store directory) and consolidates one namespace, exactly as ``consolidate
--all`` does one after another: a namespace another process is consolidating reports
``locked`` (the namespace lock is a file lock in the store), a failure is that namespace's
report, and the others go on. Each namespace is submitted once. With GPUs in the cluster each
task takes one; otherwise one CPU. Needs the ``ray`` extra.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .consolidation.service import standing_alone
from .errors import MissingExtraError
from .memory import LoRAMemory
from .types import ConsolidationReport


def consolidate_one(
    path: str, chroma_url: str | None, namespace: str, options: Mapping[str, Any]
) -> ConsolidationReport:
    """One namespace, in a Ray worker (or anywhere): its report, never its exception."""

    def run() -> ConsolidationReport:
        return LoRAMemory.open(path, chroma_url, create=False).consolidate(namespace, **options)[0]

    return standing_alone(namespace, run)


def consolidate_on_ray(
    mem: LoRAMemory,
    *,
    address: str | None = None,
    options: Mapping[str, Any] | None = None,
    on_done: Callable[[ConsolidationReport], None] | None = None,
) -> list[ConsolidationReport]:
    """Consolidate every namespace of ``mem``'s store, one Ray task each; reports in namespace
    order.

    Args:
        mem: the store (its path and Chroma URL are what the tasks open).
        address: a running cluster (``ray://host:10001``, ``auto``); None starts a local one
            for this run.
        options: consolidation options, as for :meth:`LoRAMemory.consolidate`.
        on_done: called with each report as its task finishes (progress).
    """
    try:
        import ray  # noqa: PLC0415 (the ray extra)
    except ImportError as e:
        raise MissingExtraError(
            f"--ray needs the ray extra: pip install 'lora-memory-plugin[ray]' ({e})"
        ) from e
    opts = dict(options or {})
    namespaces = sorted(set(mem.namespaces()))  # each namespace once
    if not namespaces:
        return []
    started = not ray.is_initialized()
    if started:
        ray.init(
            address=address,
            include_dashboard=False,
            logging_level=logging.WARNING,
            # a local cluster: as many tasks at once as there are cores
            num_cpus=None if address else os.cpu_count(),
        )
    try:
        resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
        gpus = 1 if resources.get("GPU", 0) >= 1 else 0
        task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(consolidate_one)
        path = str(Path(mem.path).resolve())
        refs = {task.remote(path, mem.chroma_url, ns, opts): ns for ns in namespaces}
        reports: dict[str, ConsolidationReport] = {}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            ns = refs[done[0]]
            try:
                report = ray.get(done[0])
            except Exception as e:  # the worker died (killed, out of memory): its report
                report = ConsolidationReport(ns, "failed", notes=(f"{type(e).__name__}: {e}",))
            reports[ns] = report
            if on_done is not None:
                on_done(report)
        return [reports[ns] for ns in namespaces]
    finally:
        if started:
            ray.shutdown()
