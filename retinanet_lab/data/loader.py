"""Batching, splitting and loading: the glue between datasets and `model(images, targets)`."""

from __future__ import annotations

import os
import platform
import sys

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..errors import DataError

__all__ = ["collate_fn", "make_loader", "default_num_workers", "split_dataset", "subset"]


def collate_fn(batch):
    """[(image, target), ...] -> ([image, ...], [target, ...]): images keep their own sizes."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it, else all of them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_num_workers() -> int:
    """Worker processes that work everywhere: none inside Jupyter on macOS and Windows (their 'spawn'
    start method cannot import classes defined in a notebook), else up to 4, leaving a core free."""
    if _in_notebook() and platform.system() in ("Darwin", "Windows"):
        return 0
    return max(0, min(4, usable_cores() - 1))


def make_loader(dataset: Dataset, batch_size: int = 8, shuffle: bool = False, num_workers: int | None = None,
                seed: int | None = None, drop_last: bool = False, **kwargs) -> DataLoader:
    """A DataLoader with `collate_fn`, sensible workers and, with `seed`, a repeatable shuffle."""
    if len(dataset) == 0:
        raise DataError("cannot load batches from an empty dataset")
    workers = default_num_workers() if num_workers is None else num_workers
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, collate_fn=collate_fn,
                      generator=generator, drop_last=drop_last, persistent_workers=workers > 0,
                      pin_memory=torch.cuda.is_available(), **kwargs)


def split_dataset(dataset: Dataset, val_fraction: float = 0.2, seed: int = 0) -> tuple[Subset, Subset]:
    """A repeatable random (train, val) split."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n = len(dataset)
    n_val = max(1, round(n * val_fraction))
    if n - n_val < 1:
        raise DataError(f"a dataset of {n} image(s) cannot be split into train and val: it needs at least 2")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return _subset(dataset, sorted(order[n_val:])), _subset(dataset, sorted(order[:n_val]))


def subset(dataset: Dataset, n_or_indices, seed: int | None = None) -> Subset:
    """The first n images (or n random ones with `seed`), or the given indices."""
    if isinstance(n_or_indices, int):
        if seed is None:
            indices = list(range(min(n_or_indices, len(dataset))))
        else:
            indices = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n_or_indices].tolist()
    else:
        indices = list(n_or_indices)
    return _subset(dataset, indices)


def _subset(dataset, indices) -> Subset:
    sub = Subset(dataset, indices)
    for attr in ("class_names", "num_classes"):  # keep what models and plots need
        if hasattr(dataset, attr):
            setattr(sub, attr, getattr(dataset, attr))
    return sub
