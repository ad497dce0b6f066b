"""Plain SFT rows mixed into AFT data, so one model learns to propose and to aggregate."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence

from aft_sdk.errors import ConfigError
from aft_sdk.trainers.rows import AftRow


def sft_rows(rows: Iterable[AftRow]) -> Iterator[AftRow]:
    """Plain SFT rows (conversation -> target) from AFT rows."""
    for r in rows:
        yield r.model_copy(update={"id": f"{r.id}#sft", "proposals": [], "kind": "sft"})


def mix_sft(aft: Sequence[AftRow], sft: Sequence[AftRow], ratio: float, *, seed: int = 0
            ) -> list[AftRow]:
    """AFT rows plus ``round(ratio * len(aft))`` SFT rows drawn at random, shuffled.

    This is the one meaning of ``sft_ratio`` everywhere (``aft data build``, the
    trainer's ``sft_ratio``): SFT rows per AFT row, sampled with ``seed``.

    Raises:
        ConfigError: ``ratio`` is negative or asks for more SFT rows than given.
    """
    if ratio < 0:
        raise ConfigError(f"sft ratio must be >= 0, got {ratio}")
    want = round(ratio * len(aft))
    if want > len(sft):
        raise ConfigError(f"ratio {ratio} needs {want} SFT rows but only {len(sft)} were given")
    rng = random.Random(seed)
    mixed = list(aft) + rng.sample(list(sft), want)
    rng.shuffle(mixed)
    return mixed
