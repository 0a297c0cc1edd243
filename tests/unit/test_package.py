"""The package surface: a light import, a pinned public API, typed errors."""

from __future__ import annotations

import subprocess
import sys

import lora_memory_plugin
from lora_memory_plugin import errors


def test_import_is_light():
    code = (
        "import sys, lora_memory_plugin\n"
        "heavy = [m for m in ('torch', 'transformers', 'chromadb', 'langchain_core', "
        "'llama_index', 'peft') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from lora_memory_plugin import LoRAMemory\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_api_is_pinned():
    assert sorted(lora_memory_plugin.__all__) == sorted(
        [
            "MAX_QUERY_CHARS",
            "Answer",
            "AuthenticationError",
            "BackendError",
            "BaseModelMismatchError",
            "ConfigError",
            "ConsolidationReport",
            "ForgetReport",
            "Hit",
            "InvalidInputError",
            "InvalidTypeError",
            "LoRAMemory",
            "LockHeldError",
            "LoraMemoryError",
            "MissingExtraError",
            "MissingRecordsError",
            "ModelError",
            "ModelNotAvailableError",
            "ModelPullError",
            "ModuleIntegrityError",
            "NamespaceStatus",
            "PermissionDeniedError",
            "Recall",
            "Record",
            "RecordNotFoundError",
            "RemoteMemory",
            "StoreError",
            "StoreIOError",
            "StoreStatus",
            "TamperedModelError",
            "TextTooLargeError",
            "UnknownNamespaceError",
            "__version__",
        ]
    )
    for name in lora_memory_plugin.__all__:
        assert getattr(lora_memory_plugin, name) is not None


def test_every_error_is_a_lora_memory_error_and_exported():
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.LoraMemoryError)
        assert getattr(lora_memory_plugin, name) is cls
    assert issubclass(errors.InvalidInputError, ValueError)
    assert issubclass(errors.UnknownNamespaceError, KeyError)
    assert issubclass(errors.InvalidTypeError, TypeError)
    assert str(errors.UnknownNamespaceError("plain message")) == "plain message"


def test_typed_options_name_what_the_services_take():
    """The facade's TypedDict options are the keywords the code under it accepts: a new
    consolidation option, or a renamed filter, must be added to both."""
    import dataclasses
    import inspect
    import typing

    from lora_memory_plugin import types
    from lora_memory_plugin.consolidation.engine import ConsolidationOptions
    from lora_memory_plugin.store.filters import build_where
    from lora_memory_plugin.store.service import Records

    consolidation = {f.name for f in dataclasses.fields(ConsolidationOptions)}
    assert set(typing.get_type_hints(types.ConsolidateOptions)) == consolidation
    forget_extra = set(typing.get_type_hints(types.ForgetOptions)) - consolidation
    assert forget_extra == {"where", "missing", "rebuild", "progress"}
    filters = set(inspect.signature(build_where).parameters)
    assert set(typing.get_type_hints(types.SearchFilters)) == filters
    assert set(typing.get_type_hints(types.RecordFilters)) <= filters
    turn = set(inspect.signature(Records.add_turn).parameters) - {"self", "namespace", "content"}
    assert set(typing.get_type_hints(types.TurnFields)) == turn
    doc = set(inspect.signature(Records.add_document).parameters) - {"self", "namespace", "text"}
    assert set(typing.get_type_hints(types.DocumentFields)) == doc
