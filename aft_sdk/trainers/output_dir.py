"""A training run's ``output_dir``: resume from a checkpoint, or start fresh without
mixing an earlier run's model files into the new one.

- ``resume_from_checkpoint``: a checkpoint folder, or ``true`` / ``latest`` for the last
  ``checkpoint-N`` in ``output_dir`` (as TRL's scripts offer).
- Starting fresh in a folder that holds an earlier run's model or checkpoints is refused
  unless ``overwrite_output_dir`` is set, which removes those files first (named).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from aft_sdk.errors import ConfigError

#: Files and folders a training run writes into ``output_dir``.
RUN_FILES = ("model*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin",
             "config.json", "generation_config.json", "adapter", "adapter.gguf",
             "adapter_model.safetensors", "adapter_config.json", "aft_sdk.json",
             "checkpoint-*")
#: Weights of a merged/full model, and of an adapter saved in the folder itself.
MODEL_FILES = ("model*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin",
               "config.json", "generation_config.json")
ADAPTER_FILES = ("adapter", "adapter.gguf", "adapter_model.safetensors", "adapter_config.json")


def found(folder: Path, patterns: tuple[str, ...]) -> list[Path]:
    return sorted({p for pattern in patterns for p in folder.glob(pattern)})


def remove(paths: list[Path]) -> None:
    for p in paths:
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete ``checkpoint-N`` folder with the highest N in ``output_dir``, if any.

    The Trainer writes ``trainer_state.json`` last, so a checkpoint without it was cut
    off mid-save (Ctrl-C, a kill) and is passed over.
    """
    folder = Path(output_dir)
    numbered = []
    for p in folder.glob("checkpoint-*") if folder.is_dir() else ():
        step = p.name.removeprefix("checkpoint-")
        if step.isdigit() and (p / "trainer_state.json").is_file():
            numbered.append((int(step), p))
    return max(numbered)[1] if numbered else None


def prepare_output_dir(args: Any) -> tuple[Path | None, str]:
    """Checks ``args.output_dir`` before any model is loaded.

    Returns:
        The checkpoint to resume from (``None``: a fresh start) and a line saying which.

    Raises:
        ConfigError: A checkpoint to resume that is not there, or a fresh run into a
            folder holding an earlier run without ``overwrite_output_dir``.
    """
    out = Path(args.output_dir)
    wanted = args.resume_from_checkpoint
    if isinstance(wanted, str) and wanted.lower() in ("", "false", "no", "none"):
        wanted = None
    if wanted is not None:
        if isinstance(wanted, bool) or str(wanted).lower() in ("true", "yes", "latest"):
            ckpt = last_checkpoint(out)
            if ckpt is None:
                raise ConfigError(f"--resume_from_checkpoint {wanted}: there is no "
                                  f"checkpoint-N folder in {out} (was save_strategy 'no'?)")
        else:
            ckpt = Path(wanted)
            if not (ckpt / "trainer_state.json").is_file():
                raise ConfigError(f"--resume_from_checkpoint {wanted} is not a checkpoint "
                                  "folder (no trainer_state.json in it)")
        args.resume_from_checkpoint = str(ckpt)
        return ckpt, f"resuming from {ckpt}"
    stale = found(out, RUN_FILES) if out.is_dir() else []
    if stale and not args.overwrite_output_dir:
        names = ", ".join(p.name for p in stale[:6]) + (" ..." if len(stale) > 6 else "")
        raise ConfigError(
            f"output_dir {out} already holds an earlier run ({names}); pass "
            "--overwrite_output_dir true to replace it, --resume_from_checkpoint true to "
            "continue it, or choose another output_dir")
    if stale:
        remove(stale)
        return None, f"starting fresh in {out} (removed the earlier run's {len(stale)} files)"
    return None, f"starting fresh in {out}"
