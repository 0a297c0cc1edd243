from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lora_memory_plugin import InvalidInputError, InvalidTypeError
from lora_memory_plugin.store.namespaces import (
    encode_namespace,
    pack_namespace,
    unpack_namespace,
)

CHROMA_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,510}[a-z0-9]$")


@given(st.text(min_size=1, max_size=300))
@settings(max_examples=300, deadline=None)
def test_encoding_is_safe_and_reversible_through_pack(ns):
    enc = encode_namespace(ns)
    assert CHROMA_NAME.match(enc) and ".." not in enc and "/" not in enc
    assert len(enc) <= 80
    assert unpack_namespace(pack_namespace(ns)) == ns
    assert pack_namespace(ns).isascii()


def test_no_collisions_on_tricky_names():
    names = [
        "a",
        "A",
        "../a",
        "..a",
        "a/",
        "a\\",
        "a\x00",
        "a ",
        " a",
        "名",
        "x" * 4096,
        "x" * 4095 + "y",
        "user-42",
        "user_42",
        "user 42",
        "\ud800",
    ]
    encoded = {encode_namespace(n) for n in names}
    assert len(encoded) == len(names)


@pytest.mark.parametrize(
    ("bad", "err"),
    [
        ("", InvalidInputError),
        ("x" * 5000, InvalidInputError),
        (None, InvalidTypeError),
        (42, InvalidTypeError),
        (b"ns", InvalidTypeError),
    ],
)
def test_invalid_namespaces(bad, err):
    with pytest.raises(err):
        encode_namespace(bad)
