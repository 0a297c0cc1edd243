from __future__ import annotations

import logging

import pytest

from lora_memory_plugin import ConfigError, LoRAMemory, StoreError
from lora_memory_plugin.config import (
    CONFIG_NAME,
    DISTILL_LR,
    SYNTH_LR,
    ConsolidationConfig,
    StoreConfig,
    load_config,
    save_config,
)


def test_roundtrip(tmp_path):
    cfg = StoreConfig()
    cfg.models.base_model = "Qwen/Qwen3-0.6B"
    cfg.buffer.chunk_tokens = 128
    save_config(tmp_path, cfg)
    again = load_config(tmp_path)
    assert again.models.base_model == "Qwen/Qwen3-0.6B"
    assert again.buffer.chunk_tokens == 128
    assert again.version  # written with the library version


def test_unknown_keys_are_dropped_with_a_warning(tmp_path, caplog):
    (tmp_path / CONFIG_NAME).write_text('future = 1\n[models]\nbase_model = "x"\nnew_knob = 2\n')
    with caplog.at_level(logging.WARNING):
        cfg = load_config(tmp_path)
    assert cfg.models.base_model == "x"
    assert "future" in caplog.text and "new_knob" in caplog.text


@pytest.mark.parametrize(
    "body",
    [
        "this is not toml = = =",
        "[buffer]\nchunk_tokens = 'big'\n",
        "[buffer]\nchunk_tokens = 4\n",
        "[buffer]\nchunk_overlap = 500\n",
        "[models]\ndtype = 'float8'\n",
        "[buffer]\nchroma_url = 'ftp://x'\n",
        "[consolidation]\ndistill_loss = 'kl'\n",
        "[consolidation]\nheld_out_target = 0\n",
        "[consolidation]\ntop_layers = -1\n",
        "[consolidation]\nlr = -0.001\n",
        "models = 3\n",
        b"\xff\xfe\x00garbage",
    ],
)
def test_bad_config_is_a_config_error_that_names_the_file(tmp_path, body):
    p = tmp_path / CONFIG_NAME
    p.write_bytes(body if isinstance(body, bytes) else body.encode())
    with pytest.raises(ConfigError) as ei:
        LoRAMemory.open(tmp_path)
    assert CONFIG_NAME in str(ei.value) or "buffer" in str(ei.value) or "models" in str(ei.value)
    assert p.read_bytes() == (body if isinstance(body, bytes) else body.encode())  # untouched


def test_unreadable_config(tmp_path):
    # (chmod 000 does not stop root, so make the config unreadable by being a directory)
    (tmp_path / CONFIG_NAME).mkdir()
    with pytest.raises(ConfigError, match="cannot read"):
        LoRAMemory.open(tmp_path)


def test_store_dir_that_is_a_file(tmp_path):
    f = tmp_path / "memory"
    f.write_text("not a dir")
    with pytest.raises(StoreError, match="is a file"):
        LoRAMemory.open(f)
    assert f.read_text() == "not a dir"


def test_refuses_non_empty_foreign_dir(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(StoreError, match="non-empty"):
        LoRAMemory.open(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]


def test_create_false(tmp_path):
    with pytest.raises(StoreError, match="lora-memory init"):
        LoRAMemory.open(tmp_path / "nope", create=False)
    assert not (tmp_path / "nope").exists()


def test_bad_new_store_options(tmp_path):
    with pytest.raises(ConfigError):
        LoRAMemory.open(tmp_path / "s", base_model="")
    with pytest.raises(ConfigError):
        LoRAMemory.open(tmp_path / "s2", chroma_url="localhost:8000")


def test_lr_0_is_the_methods_own_and_a_set_lr_wins() -> None:
    cc = ConsolidationConfig()
    assert cc.lr == 0.0
    assert cc.lr_for("distill+original") == cc.lr_for("distill") == DISTILL_LR
    assert cc.lr_for("qa+original") == cc.lr_for("qa") == SYNTH_LR
    assert ConsolidationConfig(lr=5e-4).lr_for("distill") == 5e-4
