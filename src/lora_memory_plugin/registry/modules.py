"""The module registry: each namespace's LoRA modules as plain PEFT directories plus our manifest.

::

    DIR/modules/<encoded namespace>/<module-id>/
        adapter_config.json          plain PEFT (vLLM and peft load the dir as is)
        adapter_model.safetensors
        manifest.json                ours: record ids, base-model fingerprint, rank, probes, ...

A module is written under ``.tmp-<module-id>-<pid>`` in the same folder, fsynced, and renamed
into place: the rename is the commit, so a reader sees a whole module or none. Nothing saved holds
a machine-specific path (peft writes the base model's path into ``adapter_config.json``; it is
replaced by the base model's portable name), so a store directory can be moved or shared.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import secrets
import shutil
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .._failpoints import failpoint
from .._fsutil import fsync_dir, fsync_tree, remove_path, write_new_file
from .._version import __version__
from ..errors import BaseModelMismatchError, ModuleIntegrityError
from ..store.namespaces import encode_namespace, pack_namespace

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MANIFEST_FORMAT = 1
TMP_PREFIX = ".tmp-"
STALE_TMP_SECONDS = 6 * 3600


@dataclass(frozen=True)
class ModuleManifest:
    """What a committed module holds and how it was made.

    Attributes:
        module_id: ``m-<utc time>-<random>``; sorts by creation time.
        namespace: the namespace (packed as ASCII JSON on disk).
        record_ids: the buffer records trained into this module (its source of truth).
        base_model: the base model's portable name ('default', a hub id, a dir name).
        base_fingerprint: sha256 identifying the base weights the adapter was trained on.
        rank, alpha, target_modules: the LoRA shape.
        knowledge_tokens: tokens of knowledge the module holds (for capacity planning).
        capacity_tokens: the knowledge tokens a module of this rank holds at the gate's recall
            (from ``lora-memory calibrate``, or the built-in estimate); 0 when unknown.
        probes: held-in questions with their expected answers (verification and routing).
        metrics: training and verification numbers (recall, drift, steps, seconds, ...).
        adapter_sha256: hash of ``adapter_model.safetensors`` (checked at load).
        config_sha256: hash of ``adapter_config.json`` (checked at load: its rank, alpha and
            target modules change what the weights do); "" in modules written before 0.2.
    """

    module_id: str
    namespace: str
    record_ids: tuple[str, ...]
    base_model: str
    base_fingerprint: str
    rank: int
    alpha: int
    target_modules: tuple[str, ...] | str = "all-linear"
    knowledge_tokens: int = 0
    capacity_tokens: int = 0
    probes: tuple[dict[str, str], ...] = ()
    metrics: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    adapter_sha256: str = ""
    config_sha256: str = ""
    format: int = MANIFEST_FORMAT
    library_version: str = ""

    def to_json(self) -> str:
        data = asdict(self)
        data["namespace"] = pack_namespace(self.namespace)
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=True) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str = MANIFEST) -> ModuleManifest:
        try:
            data = json.loads(text)
            data["namespace"] = json.loads(data["namespace"])
        except (ValueError, KeyError, TypeError) as e:
            raise ModuleIntegrityError(f"{source} is not a valid module manifest: {e}") from e
        known = {f.name for f in fields(cls)}
        extra = sorted(set(data) - known)
        if extra:
            logger.warning("%s: unknown manifest keys %s ignored", source, extra)
        kwargs = {k: v for k, v in data.items() if k in known}
        _check_schema(kwargs, source)
        for key in ("record_ids", "probes"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        if isinstance(kwargs.get("target_modules"), list):
            kwargs["target_modules"] = tuple(kwargs["target_modules"])
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise ModuleIntegrityError(f"{source} misses manifest fields: {e}") from e


MODULE_ID = re.compile(r"m-[0-9A-Za-z_-]{1,80}")
"""What a module id may look like (``new_module_id``): never a path, never a dot."""


def _check_schema(data: dict[str, Any], source: str) -> None:
    """A manifest is input (a planted or damaged file): its fields must have their types, and
    its ``module_id`` must be an id, not a path into another namespace. A bad ``created_at``
    only loses the module its place in time (it is read as 0, with a warning)."""

    def bad(key: str, rule: str) -> ModuleIntegrityError:
        return ModuleIntegrityError(f"{source}: {key} must be {rule}, got {data.get(key)!r:.80}")

    mid = data.get("module_id")
    if not isinstance(mid, str) or not MODULE_ID.fullmatch(mid):
        raise bad("module_id", f"an id matching {MODULE_ID.pattern}")
    for key in (
        "namespace",
        "base_model",
        "base_fingerprint",
        "adapter_sha256",
        "config_sha256",
        "library_version",
    ):
        if key in data and not isinstance(data[key], str):
            raise bad(key, "a string")
    for key in ("rank", "alpha", "knowledge_tokens", "capacity_tokens", "format"):
        if key in data and (isinstance(data[key], bool) or not isinstance(data[key], int)):
            raise bad(key, "an integer")
    ids = data.get("record_ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise bad("record_ids", "a list of strings")
    probes = data.get("probes", [])
    if not isinstance(probes, list) or not all(isinstance(p, dict) for p in probes):
        raise bad("probes", "a list of objects")
    if not isinstance(data.get("metrics", {}), dict):
        raise bad("metrics", "an object")
    created = data.get("created_at", 0.0)
    if (
        isinstance(created, bool)
        or not isinstance(created, (int, float))
        or not math.isfinite(created)
    ):
        logger.warning("%s: created_at %r is not a time; read as 0", source, created)
        data["created_at"] = 0.0


def store_has_modules(store_dir: Path) -> bool:
    """Does any namespace of the store hold a committed (or quarantined) module directory?"""
    top = store_dir / "modules"
    try:
        spaces = [d for d in top.iterdir() if d.is_dir()]
    except OSError:
        return False
    return any(
        m.is_dir() and not m.name.startswith(TMP_PREFIX) for d in spaces for m in d.iterdir()
    )


def modules_root(store_dir: Path, namespace: str) -> Path:
    """``DIR/modules/<encoded namespace>`` (the namespace is never used raw in a path)."""
    return store_dir / "modules" / encode_namespace(namespace)


def new_module_id() -> str:
    return f"m-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def commit_module(
    store_dir: Path, namespace: str, adapter_dir: Path, manifest: ModuleManifest
) -> Path:
    """Copy a saved PEFT adapter into the registry atomically, with its manifest.

    Args:
        store_dir: the store directory.
        namespace: the module's namespace (must match ``manifest.namespace``).
        adapter_dir: a directory holding ``adapter_config.json`` and
            ``adapter_model.safetensors`` (e.g. from peft ``save_pretrained``).
        manifest: the manifest; ``adapter_sha256`` is filled in here.

    Returns:
        The committed module directory.
    """
    if manifest.namespace != namespace:
        raise ValueError(f"manifest is for {manifest.namespace!r}, not {namespace!r}")
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (adapter_dir / name).is_file():
            raise ModuleIntegrityError(f"{adapter_dir} has no {name}: not a saved PEFT adapter")
    root = modules_root(store_dir, namespace)
    root.mkdir(parents=True, exist_ok=True)
    final = root / manifest.module_id
    if final.exists():
        raise ModuleIntegrityError(f"module {manifest.module_id} already exists in {root}")
    tmp = root / f"{TMP_PREFIX}{manifest.module_id}-{os.getpid()}"
    try:
        tmp.mkdir()
        shutil.copyfile(adapter_dir / ADAPTER_WEIGHTS, tmp / ADAPTER_WEIGHTS)
        config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = manifest.base_model  # never a local absolute path
        (tmp / ADAPTER_CONFIG).write_text(
            json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        sealed = replace(
            manifest,
            adapter_sha256=sha256_file(tmp / ADAPTER_WEIGHTS),
            config_sha256=sha256_file(tmp / ADAPTER_CONFIG),
            created_at=manifest.created_at or time.time(),
            library_version=__version__,
        )
        (tmp / MANIFEST).write_text(sealed.to_json(), encoding="utf-8")
        fsync_tree(tmp)
        failpoint("module_written")
        os.rename(tmp, final)  # the commit
        fsync_dir(root)
    except BaseException:
        remove_path(tmp)
        raise
    return final


def remove_module(store_dir: Path, namespace: str, module_id: str) -> None:
    """Delete a module so that no crash can leave half of it listed.

    The directory is first renamed to a temp name (atomic: the module is gone from listings at
    once), then deleted; a kill during the delete leaves a temp dir that the next consolidation
    removes (:func:`remove_stale_temp`).
    """
    src = modules_root(store_dir, namespace) / module_id
    if src.exists():
        _discard(src, module_id)


def _discard(src: Path, module_id: str) -> None:
    """Delete a module directory: renamed to a temp name first (atomic: gone from listings at
    once; a kill during the delete leaves a temp dir that :func:`remove_stale_temp` removes)."""
    doomed = src.parent / f"{TMP_PREFIX}rm-{module_id}-{os.getpid()}"
    os.rename(src, doomed)
    fsync_dir(src.parent)
    remove_path(doomed)


def list_modules(store_dir: Path, namespace: str) -> list[ModuleManifest]:
    """The committed modules of a namespace, oldest first (temp and broken dirs are skipped)."""
    root = modules_root(store_dir, namespace)
    if not root.is_dir():
        return []
    out = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            out.append(read_manifest(entry))
        except ModuleIntegrityError as e:
            logger.warning("skipping module %s: %s", entry, e)
    return sorted(out, key=lambda m: (m.created_at, m.module_id))


def read_manifest(module_dir: Path) -> ModuleManifest:
    """A module directory's manifest; its ``module_id`` must be the directory's own name."""
    path = module_dir / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ModuleIntegrityError(f"cannot read {path}: {e}") from e
    manifest = ModuleManifest.from_json(text, source=str(path))
    name = module_dir.name
    if name.startswith(QUARANTINE_PREFIX):  # .quarantine-<id>, or .quarantine-<id>-<time>
        name = name[len(QUARANTINE_PREFIX) :]
        if name != manifest.module_id:
            name = re.sub(r"-\d+$", "", name)
    if manifest.module_id != name:
        raise ModuleIntegrityError(
            f"{path}: module_id {manifest.module_id!r} is not its directory's name "
            f"{module_dir.name!r} (a copied or planted manifest)"
        )
    return manifest


def verify_module(module_dir: Path, base_fingerprint: str | None = None) -> ModuleManifest:
    """Check a module before loading it: files present, weights hash, base model.

    Raises:
        ModuleIntegrityError: a file is missing or the weights do not match the manifest hash.
        BaseModelMismatchError: the module was trained on other base weights (not damage: skip
            the module, do not quarantine it).
    """
    manifest = read_manifest(module_dir)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (module_dir / name).is_file():
            raise ModuleIntegrityError(f"module {manifest.module_id} lacks {name}")
    actual = sha256_file(module_dir / ADAPTER_WEIGHTS)
    if actual != manifest.adapter_sha256:
        raise ModuleIntegrityError(
            f"module {manifest.module_id}: {ADAPTER_WEIGHTS} hash {actual[:12]} does not match "
            f"its manifest ({manifest.adapter_sha256[:12]}); the file is corrupt or was swapped"
        )
    config = sha256_file(module_dir / ADAPTER_CONFIG)
    if manifest.config_sha256 and config != manifest.config_sha256:
        raise ModuleIntegrityError(
            f"module {manifest.module_id}: {ADAPTER_CONFIG} hash {config[:12]} does not match "
            f"its manifest ({manifest.config_sha256[:12]}); the file was edited or swapped"
        )
    if base_fingerprint is not None and base_fingerprint != manifest.base_fingerprint:
        raise BaseModelMismatchError(base_mismatch_message(manifest, base_fingerprint))
    return manifest


def base_mismatch_message(
    manifest: ModuleManifest, base_fingerprint: str, base_model: str = ""
) -> str:
    """Why a module of other base weights is skipped, naming both models and the fix."""
    loaded = f" ({base_model})" if base_model else ""
    return (
        f"module {manifest.module_id} was trained on base model {manifest.base_model} "
        f"(fingerprint {manifest.base_fingerprint[:12]}), but the loaded base model{loaded} has "
        f"fingerprint {base_fingerprint[:12]}; it is skipped (kept, not retrained): open the "
        f"store with base model {manifest.base_model} to use it"
    )


QUARANTINE_PREFIX = ".quarantine-"
QUARANTINE_NOTE = "QUARANTINE.txt"


def quarantine_module(store_dir: Path, namespace: str, module_id: str, reason: str) -> Path | None:
    """Move a module that failed its integrity check out of the listing, keeping its files.

    Renamed to ``.quarantine-<id>`` (atomic: no reader sees it as a module any more) with a
    note saying why; returns the new path, or None when another process moved it first.
    Its records then name a missing module: the next consolidation retrains them.
    """
    root = modules_root(store_dir, namespace)
    src = root / module_id
    dst = root / f"{QUARANTINE_PREFIX}{module_id}"
    try:
        os.rename(src, dst)
    except FileNotFoundError:
        return None
    except OSError:  # already a quarantined copy of this id: keep the first
        dst = root / f"{QUARANTINE_PREFIX}{module_id}-{int(time.time())}"
        os.rename(src, dst)
    fsync_dir(root)
    write_new_file(  # the module dir is not ours to trust: a planted link is not followed
        dst / QUARANTINE_NOTE,
        f"quarantined at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}: {reason}\n",
    )
    logger.warning("module %s quarantined: %s", module_id, reason)
    return dst


def list_quarantined(store_dir: Path, namespace: str) -> list[dict[str, str]]:
    """Quarantined modules of a namespace: ``{"module_id", "reason", "path"}``."""
    root = modules_root(store_dir, namespace)
    if not root.is_dir():
        return []
    out = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(QUARANTINE_PREFIX) and entry.is_dir():
            note = entry / QUARANTINE_NOTE
            reason = note.read_text(encoding="utf-8").strip() if note.is_file() else ""
            out.append(
                {
                    "module_id": entry.name[len(QUARANTINE_PREFIX) :],
                    "reason": reason,
                    "path": str(entry),
                }
            )
    return out


def remove_quarantined_holding(
    store_dir: Path, namespace: str, record_ids: Collection[str]
) -> list[str]:
    """Delete the quarantined modules that list any of ``record_ids``: a forgotten record must
    leave no copy, and a quarantined adapter still holds what it was trained on. Returns their
    module ids. One whose manifest cannot be read is kept (it may be the last copy of other
    facts), with a warning."""
    root = modules_root(store_dir, namespace)
    wanted = set(record_ids)
    if not wanted or not root.is_dir():
        return []
    out = []
    for entry in sorted(root.iterdir()):
        if not entry.name.startswith(QUARANTINE_PREFIX) or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            manifest = read_manifest(entry)
        except ModuleIntegrityError as e:
            logger.warning("quarantined module %s kept: its manifest is unreadable (%s)", entry, e)
            continue
        if wanted.isdisjoint(manifest.record_ids):
            continue
        _discard(entry, entry.name[len(QUARANTINE_PREFIX) :])
        out.append(manifest.module_id)
    return out


def remove_stale_temp(
    store_dir: Path, namespace: str, older_than: float = STALE_TMP_SECONDS
) -> int:
    """Delete temp module dirs left by killed runs; returns how many were removed."""
    root = modules_root(store_dir, namespace)
    if not root.is_dir():
        return 0
    removed = 0
    now = time.time()
    for entry in root.iterdir():
        if entry.name.startswith(TMP_PREFIX) and now - entry.stat().st_mtime > older_than:
            remove_path(entry)
            removed += 1
    return removed
