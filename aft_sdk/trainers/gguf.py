"""Turn a GGUF checkpoint into an ordinary Hugging Face model folder.

transformers can read GGUF files, but a model loaded with a plain ``gguf_file=`` stays
flagged as quantized: it can be neither trained nor saved. Loading with
``GgufConfig(dequantize=True)`` gives a regular fp32 model that ``save_pretrained``,
``Trainer`` and vLLM all accept.
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
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    except ImportError as e:
        raise TrainingError("loading GGUF needs pip install 'aft-sdk[train]'") from e
    folder, name = str(path.parent), path.name
    kwargs: dict[str, Any] = {"gguf_file": name}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = AutoModelForCausalLM.from_pretrained(
        folder, quantization_config=GgufConfig(dequantize=True), **kwargs
    )
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    return model, tokenizer


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
