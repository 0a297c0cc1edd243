"""The module registry: atomic commit, listing, integrity and base-model checks, portability."""

from __future__ import annotations

import json

import pytest

from lora_memory_plugin import BaseModelMismatchError, LoraMemoryError, ModuleIntegrityError
from lora_memory_plugin.registry import modules as reg


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_model_dir):
    """A real PEFT adapter saved from the tiny model (peft writes its absolute base path)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=4, target_modules="all-linear"))
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    assert str(tiny_model_dir) in (out / "adapter_config.json").read_text()
    return out


def manifest(ns="user-42", **kw):
    base = dict(
        module_id=reg.new_module_id(),
        namespace=ns,
        record_ids=("t-1", "t-2"),
        base_model="default",
        base_fingerprint="f" * 64,
        rank=4,
        alpha=4,
        probes=({"question": "q?", "answer": "a", "record_id": "t-1"},),
        metrics={"recall": 1.0},
    )
    base.update(kw)
    return reg.ModuleManifest(**base)


def test_commit_list_verify_roundtrip(tmp_path, adapter_dir):
    m = manifest(ns="../../名前")
    path = reg.commit_module(tmp_path, m.namespace, adapter_dir, m)
    assert path.parent == reg.modules_root(tmp_path, m.namespace)
    assert tmp_path in path.parents  # the namespace cannot escape the store
    listed = reg.list_modules(tmp_path, m.namespace)
    assert [x.module_id for x in listed] == [m.module_id]
    got = reg.verify_module(path, "f" * 64)
    assert got.record_ids == ("t-1", "t-2") and got.namespace == "../../名前"
    assert got.adapter_sha256 and got.created_at > 0 and got.library_version
    assert reg.list_modules(tmp_path, "other") == []


def test_saved_files_hold_no_machine_paths(tmp_path, adapter_dir, tiny_model_dir):
    m = manifest()
    path = reg.commit_module(tmp_path, m.namespace, adapter_dir, m)
    for f in path.iterdir():
        if f.suffix == ".json":
            text = f.read_text()
            assert str(tiny_model_dir) not in text and str(tmp_path) not in text
    cfg = json.loads((path / reg.ADAPTER_CONFIG).read_text())
    assert cfg["base_model_name_or_path"] == "default"


def test_peft_loads_the_committed_dir(tmp_path, adapter_dir, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    m = manifest()
    path = reg.commit_module(tmp_path, m.namespace, adapter_dir, m)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, path)
    assert model.peft_config["default"].r == 4


def test_corrupt_or_swapped_weights_are_detected(tmp_path, adapter_dir):
    m = manifest()
    path = reg.commit_module(tmp_path, m.namespace, adapter_dir, m)
    w = path / reg.ADAPTER_WEIGHTS
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ModuleIntegrityError, match="corrupt or was swapped"):
        reg.verify_module(path)


def test_quarantine_note_never_follows_a_planted_link(tmp_path, adapter_dir):
    """A module dir is not ours to trust: QUARANTINE.txt planted as a symlink is replaced,
    and the file it pointed at is left as it was."""
    m = manifest()
    path = reg.commit_module(tmp_path, m.namespace, adapter_dir, m)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (path / reg.QUARANTINE_NOTE).symlink_to(victim)
    kept = reg.quarantine_module(tmp_path, m.namespace, m.module_id, "test")
    assert kept is not None and victim.read_text() == "precious"
    note = kept / reg.QUARANTINE_NOTE
    assert not note.is_symlink() and "test" in note.read_text()


def test_an_edited_adapter_config_is_detected(tmp_path, adapter_dir):
    """Rank, alpha and target modules live in adapter_config.json: the same weights with
    another alpha answer differently, so the config is hashed with them. Manifests written
    before the hash existed still load."""
    m = manifest()
    path = reg.commit_module(tmp_path, m.namespace, adapter_dir, m)
    assert reg.verify_module(path).config_sha256 == reg.sha256_file(path / reg.ADAPTER_CONFIG)
    cfg_path = path / reg.ADAPTER_CONFIG
    cfg = json.loads(cfg_path.read_text())
    cfg["lora_alpha"] = cfg["lora_alpha"] * 100
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ModuleIntegrityError, match="edited or swapped"):
        reg.verify_module(path)
    old = json.loads((path / reg.MANIFEST).read_text())
    old.pop("config_sha256")
    (path / reg.MANIFEST).write_text(json.dumps(old))
    assert reg.verify_module(path).config_sha256 == ""


def test_base_model_mismatch_is_refused_but_is_not_damage(tmp_path, adapter_dir):
    m = manifest()
    path = reg.commit_module(tmp_path, m.namespace, adapter_dir, m)
    with pytest.raises(BaseModelMismatchError, match="open the store with base model") as err:
        reg.verify_module(path, "0" * 64)
    assert "000000000000" in str(err.value) and m.base_fingerprint[:12] in str(err.value)
    assert not isinstance(err.value, ModuleIntegrityError)  # skipped, never quarantined
    assert isinstance(err.value, LoraMemoryError)


def test_failed_commit_leaves_nothing_visible(tmp_path, adapter_dir, monkeypatch):
    def boom(_path):
        raise OSError("disk full")

    monkeypatch.setattr(reg, "fsync_tree", boom)
    m = manifest()
    with pytest.raises(OSError, match="disk full"):
        reg.commit_module(tmp_path, m.namespace, adapter_dir, m)
    assert reg.list_modules(tmp_path, m.namespace) == []
    assert list(reg.modules_root(tmp_path, m.namespace).iterdir()) == []


def test_listing_skips_temp_and_broken_dirs(tmp_path, adapter_dir):
    m = manifest()
    reg.commit_module(tmp_path, m.namespace, adapter_dir, m)
    root = reg.modules_root(tmp_path, m.namespace)
    (root / ".tmp-m-half-123").mkdir()
    (root / "m-broken").mkdir()
    (root / "m-broken" / reg.MANIFEST).write_text("{not json")
    assert [x.module_id for x in reg.list_modules(tmp_path, m.namespace)] == [m.module_id]
    assert reg.remove_stale_temp(tmp_path, m.namespace, older_than=0) == 1


def test_manifest_from_a_newer_version_still_reads(tmp_path):
    m = manifest()
    data = json.loads(m.to_json())
    data["future_field"] = 1
    again = reg.ModuleManifest.from_json(json.dumps(data))
    assert again.module_id == m.module_id and again.probes == m.probes
    with pytest.raises(ModuleIntegrityError):
        reg.ModuleManifest.from_json("[]")


def test_manifests_are_input_a_planted_one_cannot_point_elsewhere(tmp_path, adapter_dir):
    """A manifest whose module_id is a path (into another namespace) or not its directory's name
    is refused, and a bad field type too; a bad created_at only loses the module its time."""
    m = manifest()
    path = reg.commit_module(tmp_path, m.namespace, adapter_dir, m)
    text = (path / reg.MANIFEST).read_text()
    victim = reg.modules_root(tmp_path, "victim").name
    for mid in (f"../{victim}/m-x", "m-../../x", "m-a/b", "", 7):
        data = json.loads(text) | {"module_id": mid}
        with pytest.raises(ModuleIntegrityError, match="module_id"):
            reg.ModuleManifest.from_json(json.dumps(data))
    other = reg.new_module_id()
    (path / reg.MANIFEST).write_text(json.dumps(json.loads(text) | {"module_id": other}))
    with pytest.raises(ModuleIntegrityError, match="not its directory's name"):
        reg.read_manifest(path)
    assert reg.list_modules(tmp_path, m.namespace) == []  # skipped, with a warning
    for key, value in (("record_ids", "t-1"), ("rank", "4"), ("probes", [1]), ("metrics", [])):
        with pytest.raises(ModuleIntegrityError, match=key):
            reg.ModuleManifest.from_json(json.dumps(json.loads(text) | {key: value}))
    (path / reg.MANIFEST).write_text(json.dumps(json.loads(text) | {"created_at": "yesterday"}))
    [listed] = reg.list_modules(tmp_path, m.namespace)  # still listed, sorted as time 0
    assert listed.module_id == m.module_id and listed.created_at == 0.0


def test_a_quarantined_module_keeps_a_readable_manifest(tmp_path, adapter_dir):
    m = manifest()
    reg.commit_module(tmp_path, m.namespace, adapter_dir, m)
    first = reg.quarantine_module(tmp_path, m.namespace, m.module_id, "test")
    assert first is not None and reg.read_manifest(first).module_id == m.module_id
    renamed = first.with_name(f"{first.name}-1764615600")  # a second quarantine of one id
    first.rename(renamed)
    assert reg.read_manifest(renamed).module_id == m.module_id
