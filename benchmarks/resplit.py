"""Resampled splits: one small real sample judged over several random splits instead of one.

Avazu 10k's test split is 1,017 rows. On it the seed-to-seed std of a model's test AUC is about
0.003, but the split itself moves a comparison far more: over 10 random splits, same recipe and
training seeds, DCNv2 − LR ranges from −0.015 to +0.019 test AUC and ctrflow − DeepCTR-Torch
(DCNv2) from −0.009 to +0.008 (``benchmarks/results/quality.md`` and ``peers.md``, 2026-12-07). A
verdict on one split is a verdict on those 1,017 rows. Both benchmarks that compare models on the real samples (quality.py, peers.py) therefore
accept **split variants** of a dataset:

- ``<name>@split<seed>`` (e.g. ``avazu10k@split2023``) is ``<name>`` with params.yaml's
  preprocessing and ``preprocess.seed = <seed>``: the same rows, re-split at random by ctrflow
  (vocabularies refitted on that train split), processed into a directory of its own; the plain
  ``<name>`` is the default split (params.yaml's ``preprocess.seed``);
- :func:`pooled_means` pools a dataset's splits: per split the mean over the training seeds that
  every compared group ran on every split, then the mean over the splits, so each split weighs the
  same however many seeds its default split holds.

Datasets with a random split only (criteo117k, avazu10k, movielens100k); Frappe's split is BARS's
files and the synthetic log's test rows carry the oracle, so neither has variants.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Iterable

SPLIT_TAG = "@split"
_VARIANT = re.compile(r"^(?P<base>[A-Za-z0-9_]+)@split(?P<seed>\d+)$")


def split_variant(name: str) -> tuple[str, int | None]:
    """``("avazu10k", 2023)`` for ``"avazu10k@split2023"``, ``(name, None)`` for a plain name.
    ValueError for a malformed variant (``"avazu10k@split"``, ``"avazu10k@2023"``)."""
    if "@" not in name:
        return name, None
    m = _VARIANT.match(name)
    if not m:
        raise ValueError(f"dataset {name!r}: a split variant is written <dataset>{SPLIT_TAG}<seed>, "
                         f"e.g. avazu10k{SPLIT_TAG}2023")
    return m["base"], int(m["seed"])


def known_dataset(name: str, datasets: Iterable[str], resplittable: Iterable[str]) -> bool:
    """``name`` is one of ``datasets``, or a well-formed split variant of one of ``resplittable``."""
    try:
        base, split_seed = split_variant(name)
    except ValueError:
        return False
    return base in set(datasets) and (split_seed is None or base in set(resplittable))


def variant_name(base: str, seed: int) -> str:
    """The dataset name of ``base`` split with ``preprocess.seed = seed``."""
    return f"{base}{SPLIT_TAG}{seed}"


def variant_dir_name(name: str) -> str:
    """A directory name for a dataset or variant (``avazu10k@split2023`` → ``avazu10k_split2023``)."""
    return name.replace("@", "_")


def splits_of(datasets: Iterable[str], base: str) -> list[str]:
    """``base`` (if present) then its variants in split-seed order, out of ``datasets``."""
    names = set(datasets)
    variants = sorted((n for n in names if split_variant(n)[0] == base and n != base),
                      key=lambda n: split_variant(n)[1])
    return ([base] if base in names else []) + variants


def bases_with_variants(datasets: Iterable[str]) -> list[str]:
    """The base datasets that have at least one split variant among ``datasets``, in first-seen order."""
    out: list[str] = []
    for n in datasets:
        base, seed = split_variant(n)
        if seed is not None and base not in out:
            out.append(base)
    return out


def pooled_means(runs: list[dict], base: str, groups: dict[str, Callable[[dict], bool]],
                 metrics: tuple[str, ...] = ("test_auc", "test_logloss")) -> dict | None:
    """Pool ``base``'s splits (the plain dataset and its ``@split`` variants) for each group.

    ``groups``: label → predicate on a run (e.g. ``model == "lr"``). The seeds used are those that
    every group ran on every split (so the groups are compared on the same runs' splits and seeds);
    per split and group the metric is the mean over those seeds, and the pooled value the mean over
    the splits. None when fewer than two splits or no common seed.

    Returns ``{"splits": [dataset names], "seeds": [...], "groups": {label: {"per_split":
    {dataset: {metric: mean}}, metric: pooled mean}}}``."""
    datasets = splits_of({r["dataset"] for r in runs}, base)
    if len(datasets) < 2:
        return None
    by: dict = {}
    for r in runs:
        if r["dataset"] not in datasets:
            continue
        for label, pred in groups.items():
            if pred(r):
                by.setdefault(label, {}).setdefault(r["dataset"], {})[r["seed"]] = r
    if set(by) != set(groups) or any(set(by[g]) != set(datasets) for g in groups):
        return None
    seeds = sorted(set.intersection(*(set(by[g][d]) for g in groups for d in datasets)))
    if not seeds:
        return None
    out: dict = {"splits": datasets, "seeds": seeds, "groups": {}}
    for g in groups:
        per_split = {d: {m: statistics.fmean(by[g][d][s][m] for s in seeds) for m in metrics} for d in datasets}
        out["groups"][g] = {"per_split": per_split,
                            **{m: statistics.fmean(v[m] for v in per_split.values()) for m in metrics}}
    return out


def pooled_difference(pool: dict, a: str, b: str, metric: str = "test_auc") -> dict:
    """Group ``a`` − group ``b`` on ``metric`` from :func:`pooled_means`' result: the pooled
    difference, the per-split differences and how many splits ``a`` is ahead (≥) on."""
    ga, gb = pool["groups"][a], pool["groups"][b]
    per = {d: ga["per_split"][d][metric] - gb["per_split"][d][metric] for d in pool["splits"]}
    return {"diff": ga[metric] - gb[metric], "per_split": per,
            "splits_ahead": sum(v >= 0 for v in per.values()), "splits": len(per)}
