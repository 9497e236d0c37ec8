"""Reading checkpoints, with one clear sentence when a file is not one.

A retinanet_lab checkpoint (what `fit` and `save_checkpoint` in retinanet_lab.train write) is a dict
with the model's "config" and its "model" state dict (and, from training, the optimiser, scheduler,
RNG and loop state). It is read with `torch.load(weights_only=True)`, which loads tensors and plain
Python values only, never code. Anything else (a text file, a truncated download, a whole pickled model,
torchvision's bare state dict) raises `CheckpointError`: "X is not a retinanet_lab checkpoint: <why>",
instead of PyTorch's 24-line advice to set weights_only=False.

`load_checkpoint` and `load_model` here are the ones retinanet_lab.train exports, plus these checks.
"""

from __future__ import annotations

import os
import pickle
import warnings

from .errors import CheckpointError

__all__ = ["load_checkpoint", "load_model"]


def _first_sentence(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    cut = text.find(". ")
    text = text[:cut + 1] if 0 < cut < limit else text
    return text if len(text) <= limit else text[:limit - 3] + "..."


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """The dict a retinanet_lab checkpoint holds; FileNotFoundError or CheckpointError, naming `path`, if it is not one."""
    import torch

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path} (give a checkpoint.pt written by `retinanet-lab train`)")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a folder, not a checkpoint file (did you mean {os.path.join(path, 'checkpoint.pt')}?)")
    not_one = f"{path} is not a retinanet_lab checkpoint"
    with warnings.catch_warnings(record=True) as caught:  # PyTorch warns about odd pickles before failing on them
        warnings.simplefilter("always")
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
        except OSError:  # a file that cannot be read: its own message names it
            raise
        except pickle.UnpicklingError as e:
            if "weights only load failed" in str(e).lower():
                raise CheckpointError(f"{not_one}: it holds Python objects, not just tensors and config values (a whole pickled "
                                      f"model?), and those are not loaded, since loading them could run code") from e
            raise CheckpointError(f"{not_one}: not a PyTorch file ({_first_sentence(e)})") from e
        except Exception as e:  # torch.load on foreign bytes fails in many ways: EOFError, KeyError, RuntimeError, ...
            what = "an empty file" if os.path.getsize(path) == 0 else "not a PyTorch file, or a truncated one"
            raise CheckpointError(f"{not_one}: {what} ({type(e).__name__}: {_first_sentence(e) or 'no details'})") from e
    for w in caught:  # a file that loaded: pass its warnings on
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{not_one}: it holds a {type(ckpt).__name__}, not a dict with 'config' and 'model'")
    missing = [key for key in ("config", "model") if key not in ckpt]
    if missing:
        keys = ", ".join(repr(k) for k in list(ckpt)[:4]) + (", ..." if len(ckpt) > 4 else "")
        raise CheckpointError(f"{not_one}: it has no {' and no '.join(repr(k) for k in missing)} entry (its keys: {keys or 'none'}); "
                              f"a bare state dict goes into a model built for it, with model.load_state_dict(state_dict)")
    if not isinstance(ckpt["config"], dict) or not isinstance(ckpt["model"], dict):
        raise CheckpointError(f"{not_one}: its 'config' and 'model' entries must be dicts")
    return ckpt


def load_model(path: str | os.PathLike, map_location="cpu"):
    """A RetinaNet from a checkpoint written by `fit` or `save_checkpoint`, ready for eval."""
    from .model import RetinaNet

    path = os.fspath(path)
    ckpt = load_checkpoint(path, map_location)
    try:
        model = RetinaNet(**ckpt["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its config does not build a RetinaNet ({_first_sentence(e)}); "
                              f"was it written by another version of retinanet_lab?") from e
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: its weights do not fit the model its config describes "
                              f"({_first_sentence(e)})") from e
    return model.eval()
