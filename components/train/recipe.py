"""How the default training recipe adapts to the size of the data.

CTR models over-fit abruptly when they see a training row a second time (the "one-epoch phenomenon":
validation AUC peaks at the end of the first epoch, or early in the second, on every real sample we
measured), so what a model can learn is what it learns in its first pass. A fixed batch size is
therefore wrong at one end of the scale or the other: at 4096 a 100k-row log is ~20 Adam steps an
epoch and the models stop before they learn anything beyond LR; at 256 a 40M-row log takes hours an
epoch for no gain. ``train.batch_size: auto`` keeps the number of steps in the first epoch in a range
that learns on small data and stays fast on large data:

    batch = clamp(2 ** round(log2(train_rows / AUTO_STEPS)), AUTO_MIN, AUTO_MAX)

i.e. about :data:`AUTO_STEPS` steps an epoch until the batch reaches :data:`AUTO_MAX` (above about
1.6M training rows an epoch simply has more steps). Measured on our samples (benchmarks/results/
quality.md): 80k–94k training rows → 512; 1.6M → 4096; Kaggle Criteo's 36.7M → 4096.
"""

from __future__ import annotations

import math

AUTO_STEPS = 160
AUTO_MIN = 256
AUTO_MAX = 4096


def resolve_batch_size(batch_size: int | str, train_rows: int) -> int:
    """``batch_size`` itself when it is a number; for ``"auto"`` the rule of the module doc."""
    if batch_size != "auto":
        return int(batch_size)
    if train_rows <= 0:
        return AUTO_MIN
    power = round(math.log2(max(train_rows / AUTO_STEPS, 1.0)))
    return int(min(max(2 ** power, AUTO_MIN), AUTO_MAX))


def check_batch_size(value):
    """Pydantic check of a ``batch_size`` setting: a positive integer or ``"auto"``."""
    if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise ValueError(f"must be a positive integer or 'auto', got {value!r}")
    return value
