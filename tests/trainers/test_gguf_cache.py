"""A GGUF file is converted to an HF model once; later loads read the kept folder."""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.needs("embedded", "train")]


def test_a_converted_gguf_is_kept_and_loads_the_same(gguf_path, tmp_path, monkeypatch) -> None:
    import torch

    from aft_sdk.trainers.gguf import load_gguf

    monkeypatch.setenv("AFT_GGUF_CACHE", str(tmp_path / "cache"))
    converted, tok1 = load_gguf(gguf_path)
    kept = [p for p in (tmp_path / "cache").iterdir()]
    assert len(kept) == 1 and kept[0].name.startswith(gguf_path.stem)  # no partial folder
    assert (kept[0] / "config.json").is_file()
    start = time.perf_counter()
    loaded, tok2 = load_gguf(gguf_path)
    took = time.perf_counter() - start
    a, b = converted.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    text = "Hello! What is 12 + 30? Answer: 42."
    assert tok1(text)["input_ids"] == tok2(text)["input_ids"]
    assert tok1.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == \
        tok2.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    # Named after the GGUF's folder either way (adapters record it as their base).
    assert loaded.name_or_path == converted.name_or_path == str(gguf_path.parent)
    print(f"load from the kept folder: {took:.2f} s")

    # A changed file (a new modification time) gets a folder of its own, never a stale one;
    # AFT_GGUF_CACHE=0 keeps nothing.
    import os
    import shutil

    from aft_sdk.trainers.gguf import _cache_dir

    copy = tmp_path / gguf_path.name
    shutil.copy(gguf_path, copy)
    before = _cache_dir(copy, "v")
    os.utime(copy, ns=(0, copy.stat().st_mtime_ns + 10**9))
    assert _cache_dir(copy, "v") != before and _cache_dir(copy, "w") != _cache_dir(copy, "v")
    monkeypatch.setenv("AFT_GGUF_CACHE", "0")
    assert _cache_dir(copy, "v") is None
