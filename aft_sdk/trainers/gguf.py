"""Turn a GGUF checkpoint into an ordinary Hugging Face model folder.

transformers can read GGUF files, but a model loaded with a plain ``gguf_file=`` stays
flagged as quantized: it can be neither trained nor saved. Loading with
``GgufConfig(dequantize=True)`` gives a regular fp32 model that ``save_pretrained``,
``Trainer`` and vLLM all accept.

Converting takes most of a minute even for a 135M model (the tokenizer is rebuilt from
the GGUF vocabulary), so the result is kept on disk and later loads of the same file take
under a second: ``$AFT_GGUF_CACHE`` (default ``$XDG_CACHE_HOME/aft_sdk/gguf`` or
``~/.cache/aft_sdk/gguf``; ``0`` turns it off), one folder per file, keyed by the file's
path, size and modification time and the transformers version.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from aft_sdk.errors import ConfigError, TrainingError

logger = logging.getLogger(__name__)


def load_gguf(gguf_path: str | os.PathLike[str], *, dtype: Any = None) -> tuple[Any, Any]:
    """Loads a GGUF file as a trainable, saveable HF model and its tokenizer.

    Args:
        gguf_path: Path to the ``.gguf`` file.
        dtype: Torch dtype for the weights (default fp32).

    Returns:
        ``(model, tokenizer)``.
    """
    path = Path(gguf_path)
    if not path.is_file():
        raise ConfigError(f"GGUF file not found: {path}")
    try:
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    except ImportError as e:
        raise TrainingError("loading GGUF needs pip install 'aft-sdk[train]'") from e
    folder, name = str(path.parent), path.name
    extra: dict[str, Any] = {} if dtype is None else {"dtype": dtype}
    cached = _cache_dir(path, transformers.__version__)
    if cached is not None and (cached / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(cached, **extra)
        tokenizer = AutoTokenizer.from_pretrained(cached)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            folder, quantization_config=GgufConfig(dequantize=True), gguf_file=name)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        if cached is not None:
            _keep(model, tokenizer, cached)
        if dtype is not None:
            model = model.to(dtype)
    # Named after the GGUF's folder either way, as a direct load names it (adapters
    # record it as their base).
    model.config._name_or_path = model.name_or_path = folder
    tokenizer.name_or_path = folder
    return model, tokenizer


def _cache_dir(path: Path, version: str) -> Path | None:
    import hashlib

    root = os.environ.get("AFT_GGUF_CACHE")
    if root == "0":
        return None
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(base) / "aft_sdk" / "gguf")
    st = path.resolve().stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|transformers {version}"
    return Path(root) / f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _keep(model: Any, tokenizer: Any, cached: Path) -> None:
    """Saves the converted model beside the others, whole or not at all (a folder
    renamed into place, so a concurrent load never sees half of one)."""
    import shutil
    import tempfile

    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cached.parent, prefix=".partial-"))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(cached)
        except OSError:  # another process kept it first
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as e:
        logger.warning("could not keep the converted GGUF in %s (%s): the next load "
                       "converts it again", cached.parent, e)


def export_gguf_to_hf(
    gguf_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, dtype: Any = None
) -> Path:
    """Writes the dequantised model and tokenizer of a GGUF file to ``out_dir``.

    The folder loads in transformers and vLLM unchanged. Returns ``out_dir``.
    """
    out = Path(out_dir)
    model, tokenizer = load_gguf(gguf_path, dtype=dtype)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    logger.info("exported %s to %s", gguf_path, out)
    return out


# Architectures whose llama.cpp converter reorders the rows of the query and key
# projections (rotary halves -> interleaved pairs); the adapter's B matrices must follow.
_PERMUTED_QK = {"llama"}
_SUPPORTED = _PERMUTED_QK | {"qwen2", "qwen3"}


def _base_shape(base: str | os.PathLike[str]) -> dict[str, Any]:
    """Architecture, layer and head counts of the base model (a .gguf file or HF config)."""
    path = Path(base)
    if path.suffix == ".gguf":
        import gguf

        if not path.is_file():
            raise ConfigError(f"base GGUF not found: {path}")
        fields = gguf.GGUFReader(path).fields
        arch = fields["general.architecture"].contents()
        return {"arch": arch, "layers": fields[f"{arch}.block_count"].contents(),
                "heads": fields[f"{arch}.attention.head_count"].contents(),
                "kv_heads": fields[f"{arch}.attention.head_count_kv"].contents(),
                "tensors": {t.name for t in gguf.GGUFReader(path).tensors}}
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(str(base))
    except OSError as e:
        raise ConfigError(f"cannot read the base model's config from {base!r}: give the "
                          "base .gguf file or a folder with config.json") from e
    arch = cfg.model_type
    return {"arch": arch, "layers": cfg.num_hidden_layers, "heads": cfg.num_attention_heads,
            "kv_heads": getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads,
            "tensors": None}


def _permute_rows(b: Any, heads: int) -> Any:
    """The row order llama.cpp's converter gives q/k weights, applied to a LoRA B matrix."""
    rows = b.shape[0]
    return b.reshape(heads, 2, rows // heads // 2, *b.shape[1:]).swapaxes(1, 2).reshape(b.shape)


def export_lora_to_gguf(
    adapter_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    base: str | os.PathLike[str],
    dtype: str = "f16",
) -> Path:
    """Writes a PEFT LoRA adapter as a llama.cpp GGUF adapter file.

    The file loads with ``llama_cpp.Llama(model_path=BASE_GGUF, lora_path=out_path)``,
    ``EmbeddedBackend(lora_path=...)``, ``llama-server --lora`` and Ollama's ``ADAPTER``.
    Tensor names come from the ``gguf`` package's name map; for Llama-architecture models
    the query/key B matrices get the row order llama.cpp's converter gives the base weights.

    Args:
        adapter_dir: Folder with ``adapter_config.json`` and ``adapter_model.safetensors``.
        out_path: The ``.gguf`` file to write.
        base: The base model the adapter was trained on: its ``.gguf`` file (checked
            tensor by tensor) or an HF folder / id with its ``config.json``.
        dtype: ``f16`` (half the size) or ``f32``.

    Raises:
        ConfigError: Not a LoRA adapter, an unsupported architecture, or a module the
            base model does not have.
    """
    import json

    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    folder, out = Path(adapter_dir), Path(out_path)
    if dtype not in ("f16", "f32"):
        raise ConfigError(f"dtype must be 'f16' or 'f32', got {dtype!r}")
    cfg_path, weights = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if not cfg_path.is_file() or not weights.is_file():
        raise ConfigError(f"{folder} is not a PEFT adapter folder: it needs adapter_config.json "
                          "and adapter_model.safetensors (what save_pretrained writes)")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("peft_type") != "LORA":
        raise ConfigError(f"{folder}: only LoRA adapters convert, this is {cfg.get('peft_type')}")
    shape = _base_shape(base)
    if shape["arch"] not in _SUPPORTED:
        raise ConfigError(f"GGUF adapter export supports {sorted(_SUPPORTED)} models, "
                          f"not {shape['arch']!r}; export a merged model instead")
    # llama.cpp scales by alpha / r; rank-stabilised LoRA scales by alpha / sqrt(r).
    alpha = float(cfg["lora_alpha"])
    if cfg.get("use_rslora"):
        alpha *= float(cfg["r"]) ** 0.5
    names = gguf.TensorNameMap(
        {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[shape["arch"]], shape["layers"])
    pairs: dict[str, dict[str, Any]] = {}
    for key, value in load_file(str(weights)).items():
        module, _, part = key.rpartition(".lora_")
        if part not in ("A.weight", "B.weight"):
            raise ConfigError(f"{folder}: tensor {key!r} is not a LoRA A/B matrix (adapters "
                              "with trained embeddings or extra modules do not convert)")
        hf_name = module.removeprefix("base_model.model.") + ".weight"
        pairs.setdefault(hf_name, {})[part[0]] = value.astype(np.float32)
    writer = gguf.GGUFWriter(str(out), shape["arch"])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    np_dtype = np.float16 if dtype == "f16" else np.float32
    for hf_name, ab in sorted(pairs.items()):
        name = names.get_name(hf_name, try_suffixes=(".weight",))
        if name is None or (shape["tensors"] is not None and name not in shape["tensors"]):
            raise ConfigError(f"{folder}: module {hf_name!r} has no tensor in the base model")
        a, b = ab["A"], ab["B"]
        if shape["arch"] in _PERMUTED_QK and name.endswith(("attn_q.weight", "attn_k.weight")):
            b = _permute_rows(b, shape["heads"] if "attn_q" in name else shape["kv_heads"])
        writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a, dtype=np_dtype))
        writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b, dtype=np_dtype))
    out.parent.mkdir(parents=True, exist_ok=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    logger.info("wrote GGUF LoRA adapter %s (%d modules, alpha %s)", out, len(pairs), alpha)
    return out
