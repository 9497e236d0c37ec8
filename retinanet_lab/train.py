"""Training as one function, `fit`: the paper's optimisation (section 4.1) and the practice around it.

    history = fit(model, train_data, val_data, epochs=10, batch_size=8, out_dir="runs/shapes")

- The paper (§4.1, "Optimization"): SGD, momentum 0.9, weight decay 1e-4, learning rate 0.01 for 16 images,
  divided by 10 at 60k and 80k of 90k iterations (here: at 2/3 and 8/9 of the run, `schedule="step"`).
- Not in the paper, and named as such: the learning rate follows the batch by the linear scaling rule
  (lr = 0.01 x batch / 16; Goyal et al. 2017, which Detectron follows), printed at the start; a linear warm-up
  (Detectron's); a cosine schedule (`schedule="cosine"`); gradient clipping at norm 10 (`clip_grad_norm`, on by
  default, None turns it off); AdamW (`optimizer="adamw"`, what the classroom preset uses).
- CPU or CUDA picked automatically (`device=` overrides); on CUDA, autocast in bfloat16 where supported,
  else float16 with a GradScaler.
- Safe: a NaN or infinite loss stops the run with the step and the term at fault and keeps the last good
  checkpoint; checkpoints are written atomically every `checkpoint_every` steps and at the end;
  `resume=` continues exactly (model, optimiser, scheduler, scaler, RNG and data position).
- Multi-GPU: the same call runs under `torchrun --nproc_per_node=N` with DistributedDataParallel (NCCL on
  CUDA, gloo on CPU): each process takes its share of every global batch of N x batch_size images, the
  learning rate follows the global batch, and only rank 0 shows progress, logs, evaluates and saves.
- Watchable: a tqdm bar (a widget in Jupyter, text in a terminal) with loss terms and images/s, callbacks
  `fn(event, info)` on "step", "eval" and "end", and a JSON-lines metrics log in out_dir. A callback
  that raises `StopTraining` (a Stop button) ends the run cleanly: checkpoint written, `history["stopped"]`.
  Ctrl-C (or the kernel's ■) writes a checkpoint of the last finished step before the KeyboardInterrupt goes on.
- Fine-tuning: `replace_classifier` (new classes) and `freeze_backbone` (weights and BatchNorm statistics).

`fit` reads top to bottom as the run: `_check_length` and `_plan` (how long, and the schedule's step plan),
`_optimizer` and `_start_schedule_and_amp`, `_resume`, `_announce`, then `_train`: epochs of `_train_epoch`, each
batch one `_step` (with `_stop_if_diverged`), then `_Budget.after_step` (a time budget's probe) and `_after_step`
(log, callbacks, `_checkpoint`); `_evaluate` between epochs. They share one `_Run`: the model, optimiser, schedule,
plan, loop position and history.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from .checkpoint import load_checkpoint, load_model
from .data.loader import collate_fn, default_num_workers

__all__ = ["fit", "TrainingDiverged", "StopTraining", "scaled_lr", "lr_factor", "replace_classifier", "freeze_backbone",
           "save_checkpoint", "load_checkpoint", "load_model"]


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the message says when, which term, and what to try."""


class StopTraining(Exception):
    """Raised by a callback to end `fit` early and cleanly (the last step is kept and checkpointed)."""


def scaled_lr(batch_size: int, base_lr: float = 0.01, base_batch: int = 16) -> float:
    """The linear scaling rule (Goyal et al. 2017): the paper's 0.01 for 16 images, proportionally for other batches."""
    return base_lr * batch_size / base_batch


def lr_factor(step: int, total: int, warmup: int, schedule: str = "step", warmup_factor: float = 0.001) -> float:
    """Multiplier of the base learning rate at `step`: linear warm-up, then step (x0.1 at 2/3 and 8/9) or cosine."""
    if step < warmup:
        alpha = step / max(1, warmup)
        return warmup_factor * (1 - alpha) + alpha
    if schedule == "step":
        return 0.1 ** sum(step >= m for m in (int(total * 2 / 3), int(total * 8 / 9)))
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if schedule == "constant":
        return 1.0
    raise ValueError(f"schedule must be 'step', 'cosine' or 'constant', got {schedule!r}")


def replace_classifier(model, num_classes: int, class_names: list[str] | None = None, prior_prob: float | None = None):
    """Fine-tuning on new classes: a fresh classification output layer for `num_classes`, its bias set to
    the prior (section 4.1); everything else keeps its weights. The model does it: `model.replace_classes`."""
    if class_names and len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} names for num_classes={num_classes}")
    return model.replace_classes(list(class_names) if class_names else num_classes, prior_prob)


def freeze_backbone(model):
    """Freeze the backbone for fine-tuning on a small dataset: its weights *and* its BatchNorm statistics.

    `requires_grad_(False)` alone is not a freeze: BatchNorm layers in training mode still normalise with each batch's
    statistics and update their running averages. Here every BatchNorm2d of the backbone becomes a FrozenBatchNorm2d
    with the same statistics and affine parameters (as torchvision and Detectron freeze pretrained backbones), no
    backbone parameter gets a gradient, and the model's configuration records it (trainable_backbone_layers=0,
    frozen_bn=True), so a checkpoint of the fine-tuned model reloads the same way.
    """
    from .backbone import FrozenBatchNorm2d

    def convert(module: torch.nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, torch.nn.BatchNorm2d):
                frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps).to(child.running_mean.device)
                for buffer in ("weight", "bias", "running_mean", "running_var"):
                    getattr(frozen, buffer).copy_(getattr(child, buffer).detach())
                setattr(module, name, frozen)
            else:
                convert(child)

    convert(model.backbone)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    model.cfg = model.cfg.replace(trainable_backbone_layers=0, frozen_bn=True)  # a checkpoint rebuilds it frozen
    return model


def _atomic_save(obj, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_checkpoint(path: str, model, optimizer=None, scheduler=None, scaler=None, state: dict | None = None) -> None:
    """Write model (with its config), optimiser, scheduler, scaler, RNG and loop state atomically."""
    ckpt = {"config": model.config, "model": model.state_dict(), "state": state or {},
            "rng": {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}}
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is not None:
            ckpt[name] = obj.state_dict()
    _atomic_save(ckpt, path)


def _device(device) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _epoch_batches(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool, rank: int = 0,
                   world: int = 1) -> list[list[int]]:
    """This process's batches of one epoch: a permutation fixed by (seed, epoch), so that a resumed run
    sees the same ones, cut into global batches of world x batch_size, of which rank takes its slice."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch)) if shuffle else torch.arange(n)
    order = order.tolist()
    step = batch_size * world
    batches = [order[i:i + step] for i in range(0, n - step + 1, step)] or [order[: step]]
    return [b[rank * batch_size:(rank + 1) * batch_size] or b[:batch_size] for b in batches]


def _distributed(device: torch.device) -> tuple[int, int, torch.device, bool]:
    """(rank, world size, device, whether we started the process group) under torchrun; (0, 1, device, False) otherwise."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device, False
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    started = not dist.is_initialized()
    if started:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device, started


def fit(model, train_data, val_data=None, *, epochs: int = 10, batch_size: int = 8, lr: float | None = None,
        base_lr: float = 0.01, optimizer: str = "sgd", momentum: float = 0.9, weight_decay: float = 1e-4, warmup_steps: int | None = None,
        schedule: str = "step", clip_grad_norm: float | None = 10.0, device=None, amp: bool | None = None,
        seed: int = 0, out_dir: str | None = None, checkpoint_every: int = 200, resume: str | bool | None = None,
        eval_every: int | None = None, callbacks=(), progress: bool = True, num_workers: int | None = None,
        deterministic: bool = False, log_every: int = 10, verbose: bool = True, steps: int | None = None,
        minutes: float | None = None, channels_last: bool = True, train_size: int | tuple[int, ...] | None = None) -> dict:
    """Train `model` on `train_data` (see the module docstring). Returns {"steps": [...], "evals": [...]}.

    The length of the run is `epochs` passes over the data, or `steps` optimiser steps (epochs then run as needed:
    on a small dataset a number of epochs can mean a handful of steps), or what fits in `minutes`: the first
    PROBE_STEPS steps are timed and the schedule (warm-up, then cosine or step decay) is fitted to the number of
    steps that fit the budget, with a final evaluation after it. With `steps` or `minutes`, `eval_every` counts
    epochs as before and the run also ends with an evaluation. `channels_last` stores the convolutions' weights as
    NHWC, the layout the CPU's and cuDNN's kernels work in (a step 11% faster on the 2-core CPU, 17% on an H100).
    `train_size` trains at a smaller input size than the model's own, at which it is still evaluated and saved
    (train small, test large: Touvron et al. 2019); (128 / 160)^2 = 64% of the FLOPs a step at 160 px. A tuple is a
    schedule, small images first: `(96, 128)` trains the first half of the planned steps at 96 px, the second at 128.
    """
    if len(train_data) == 0:
        raise ValueError("train_data is empty")
    train_size = _check_train_size(train_size)
    rank, world, device, started = _distributed(_device(device))
    progress, verbose, out_dir = progress and rank == 0, verbose and rank == 0, out_dir if rank == 0 else None
    _seed_process(seed + rank, deterministic)  # ranks augment differently
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format).train()
    net = model if world == 1 else torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)
    _check_length(epochs, steps, minutes, world)
    steps_per_epoch = len(_epoch_batches(len(train_data), batch_size, seed, 0, True, rank, world))
    plan = _plan(epochs, steps, minutes, steps_per_epoch, warmup_steps)  # the scheduler reads it (a time budget refits it)
    length = _length_text(epochs, steps, minutes, plan["total"], steps_per_epoch)
    budgeted = steps is not None or minutes is not None
    if budgeted:
        epochs = 10**9  # the step budget ends the run
    lr_given, lr = lr is not None, scaled_lr(batch_size * world, base_lr) if lr is None else lr
    run = _Run(model, net, device, rank, world, plan, *_optimizer(model, optimizer, lr, momentum, weight_decay),
               batch_size=batch_size, base_lr=base_lr, clip_grad_norm=clip_grad_norm, log_every=log_every,
               checkpoint_every=checkpoint_every, out_dir=out_dir, callbacks=callbacks, train_size=train_size)
    _start_schedule_and_amp(run, schedule, amp)
    if resume:
        _resume(run, resume, keep_plan=minutes is not None, verbose=verbose)
    if verbose:
        warmup = "a tenth of the steps as" if minutes is not None and warmup_steps is None else run.plan["warmup"]
        _announce(run, lr, lr_given, length, schedule, warmup)
    budget = _Budget(minutes, warmup_steps, schedule, verbose) if minutes is not None and run.main else None
    workers = 0 if deterministic else (default_num_workers() if num_workers is None else num_workers)
    run.history["stopped"] = False
    try:
        _train(run, train_data, val_data, epochs, steps_per_epoch, seed, workers, progress, eval_every, budget, budgeted)
    except (StopTraining, KeyboardInterrupt) as stop:
        _stopped(run, stop, verbose)  # a KeyboardInterrupt is raised again, after the checkpoint
    if started:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    _checkpoint(run)
    _emit(run, "end", {"step": run.state["step"], "history": run.history, "stopped": run.history["stopped"]})
    return run.history


# --- the parts of `fit`, in the order it calls them ------------------------------------------------------------


def _stopped(run: _Run, stop: BaseException, verbose: bool) -> None:
    """A callback's StopTraining ends the run as planned (the checkpoint follows in `fit`). A KeyboardInterrupt (Ctrl-C,
    the kernel's ■) keeps the last finished step: the checkpoint is written now, unless the interrupt fell inside an
    update's bookkeeping (microseconds of a step), and the interrupt goes on, so a periodic checkpoint 200 steps back
    is not all that is left. `resume=` continues from it."""
    if isinstance(stop, StopTraining):
        run.history["stopped"] = True
        if verbose:
            print(f"stopped by a callback at step {run.state['step']} of {run.plan['total']}")
        return
    if run.ckpt_path and run.state["step"] > 0 and not run.updating:
        _checkpoint(run)
        if verbose:
            print(f"interrupted at step {run.state['step']} of {run.plan['total']}: checkpoint written to {run.ckpt_path} "
                  "(resume=True, or `retinanet-lab train ... --resume`, continues from it)")
    raise stop


def _seed_process(seed: int, deterministic: bool) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def _check_length(epochs: int, steps: int | None, minutes: float | None, world: int) -> None:
    """A clear error unless the run has exactly one length: epochs, or steps=, or minutes= (one process only)."""
    if steps is not None and minutes is not None:
        raise ValueError("give fit either steps= or minutes=, not both")
    if (steps is not None and steps < 1) or (minutes is not None and not minutes > 0) or epochs < 1:
        raise ValueError(f"the run must have a length: epochs={epochs}, steps={steps}, minutes={minutes}")
    if minutes is not None and world > 1:
        raise ValueError("minutes= times the steps of one process; with several processes give steps= instead")


def _check_train_size(train_size) -> tuple[int, ...] | None:
    """train_size as a tuple of sizes (one: a fixed size), or None; a clear error for anything but ints >= 32."""
    if train_size is None:
        return None
    sizes = (train_size,) if isinstance(train_size, int) else tuple(train_size) if isinstance(train_size, (tuple, list)) else ()
    if not sizes or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 32 for s in sizes):
        raise ValueError(f"train_size must be an int >= 32 (pixels of the shorter side) or a tuple of them, "
                         f"got {train_size!r}")
    return sizes


def _plan(epochs: int, steps: int | None, minutes: float | None, steps_per_epoch: int, warmup_steps: int | None) -> dict:
    """The run's step plan {"total", "warmup"}: what the learning-rate schedule is fitted to."""
    total = steps if steps is not None else epochs * steps_per_epoch
    if minutes is not None:  # a first guess, until the probe steps have been timed
        total = max(PROBE_STEPS + 1, steps_per_epoch * epochs)
    return {"total": total, "warmup": min(500, total // 10) if warmup_steps is None else warmup_steps}


def _length_text(epochs: int, steps: int | None, minutes: float | None, total: int, steps_per_epoch: int) -> str:
    if minutes is not None:
        return (f"{minutes:g} minute{'s' if minutes != 1 else ''} (the first {PROBE_STEPS} steps are timed, then the "
                f"schedule fits the budget)")
    return f"{total} steps" + ("" if steps is not None else f" ({epochs} epochs x {steps_per_epoch})")


def _optimizer(model, name: str, lr: float, momentum: float, weight_decay: float):
    """(optimiser, the parameters it trains): SGD with momentum (the paper's, §4.1) or AdamW. Both update all the
    parameters in one fused kernel where torch has it (>= 2.8 on the CPU and CUDA): the same update, and on the
    2-core CPU 3.8 ms a step instead of 12 for the classroom model's AdamW."""
    params = [p for p in model.parameters() if p.requires_grad]
    fused = _fused_kernels(params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused), params
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused), params
    raise ValueError(f"optimizer must be 'sgd' (paper) or 'adamw', got {name!r}")


def _fused_kernels(params) -> bool | None:
    """True where torch's fused optimiser kernels are mature (torch >= 2.8, as Hugging Face's Trainer judges) for
    these parameters (floating point, on the CPU or CUDA); None (torch's own choice) elsewhere."""
    version = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
    ok = version >= (2, 8) and bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return True if ok else None


@dataclass
class _Run:
    """What the parts of one `fit` call share: the model (and its DDP wrapper), where it runs, the optimiser, the
    schedule's step `plan`, the loop's position `state` and the `history`, and the settings the steps read."""

    model: torch.nn.Module
    net: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    device: torch.device
    rank: int
    world: int
    plan: dict  # {"total", "warmup"}: the learning-rate schedule reads it at every step
    optimizer: torch.optim.Optimizer
    params: list
    batch_size: int
    base_lr: float
    clip_grad_norm: float | None
    log_every: int
    checkpoint_every: int
    out_dir: str | None = None  # None in every process but rank 0
    callbacks: tuple = ()
    train_size: tuple[int, ...] | None = None  # the training steps' input sizes, in equal shares (None: the model's own)
    scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
    scaler: torch.amp.GradScaler | None = None
    use_amp: bool = False
    amp_dtype: torch.dtype = torch.bfloat16
    updating: bool = False  # between the optimiser's step and the step count: no checkpoint on an interrupt there
    state: dict = field(default_factory=lambda: {"step": 0, "epoch": 0, "batch": 0})
    history: dict = field(default_factory=lambda: {"steps": [], "evals": []})

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def ckpt_path(self) -> str | None:
        return os.path.join(self.out_dir, "checkpoint.pt") if self.out_dir else None


def _start_schedule_and_amp(run: _Run, schedule: str, amp: bool | None) -> None:
    """The learning-rate schedule (warm-up, then step or cosine, fitted to run.plan), mixed precision on CUDA (bfloat16
    where supported, else float16 with a GradScaler), and the output folder."""
    plan = run.plan
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(
        run.optimizer, lambda s: lr_factor(s, plan["total"], plan["warmup"], schedule))
    device = run.device
    run.use_amp = (device.type == "cuda") if amp is None else amp
    run.amp_dtype = torch.bfloat16 if (device.type != "cuda" or torch.cuda.is_bf16_supported()) else torch.float16
    run.scaler = torch.amp.GradScaler(device.type, enabled=run.use_amp and run.amp_dtype == torch.float16)
    if run.out_dir:
        os.makedirs(run.out_dir, exist_ok=True)


def _resume(run: _Run, resume: str | bool, keep_plan: bool, verbose: bool) -> None:
    """Continue from a checkpoint exactly: model, optimiser, scheduler, scaler, loop position, history and RNG.
    resume=True continues from out_dir's checkpoint if there is one; a path must exist. A time-budgeted run
    (keep_plan) keeps the plan it fitted; otherwise the arguments decide the plan."""
    path = run.ckpt_path if resume is True else resume
    if not (path and os.path.exists(path)):
        if resume is not True:
            raise FileNotFoundError(f"resume checkpoint not found: {path}")
        return
    ckpt = load_checkpoint(path, map_location=run.device)
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    if "scaler" in ckpt:
        run.scaler.load_state_dict(ckpt["scaler"])
    state = dict(ckpt["state"])
    run.history = state.pop("history", run.history)
    saved_plan = state.pop("plan", {})
    if keep_plan:
        run.plan.update(saved_plan)  # in place: the scheduler reads this dict
    run.state = state
    torch.set_rng_state(ckpt["rng"]["torch"].cpu())
    random.setstate((3, tuple(ckpt["rng"]["python"]), None))
    if ckpt["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in ckpt["rng"]["cuda"]])
    if verbose:
        print(f"resumed from {path} at step {state['step']} (epoch {state['epoch']}, batch {state['batch']})")


def _announce(run: _Run, lr: float, lr_given: bool, length: str, schedule: str, warmup) -> None:
    """One line: where, how long, which optimiser, and the learning rate with the rule that gave it."""
    batch = run.batch_size * run.world
    where = f"{run.world} processes on {run.device.type}" if run.world > 1 else str(run.device)
    if not lr_given:
        how = f"{run.base_lr:g} x {batch}/16 by the linear scaling rule"
    elif isinstance(run.optimizer, torch.optim.AdamW):
        how = "given; AdamW's rate is not scaled with the batch"
    else:
        how = f"given; the linear scaling rule would give {scaled_lr(batch, run.base_lr):g} for batch {batch}"
    print(f"training on {where} for {length}; {type(run.optimizer).__name__}, lr = {lr:g} ({how}), "
          f"{warmup} warm-up steps, {schedule} schedule" + (f", AMP {run.amp_dtype}" if run.use_amp else "")
          + (f"; steps at {' then '.join(map(str, run.train_size))} px, evaluated and saved at {run.model.min_size} px"
             if run.train_size else ""))


def _train(run: _Run, train_data, val_data, epochs: int, steps_per_epoch: int, seed: int, workers: int,
           progress: bool, eval_every: int | None, budget, budgeted: bool) -> None:
    """The loop over epochs until the epochs or the step plan end; evaluations every `eval_every` epochs, and at
    the end of a budgeted (steps= or minutes=) run."""
    from tqdm.auto import tqdm

    state, history = run.state, run.history
    bar = tqdm(total=run.plan["total"], initial=state["step"], desc="fit", disable=not progress, dynamic_ncols=True)
    try:
        while state["epoch"] < epochs and state["step"] < run.plan["total"]:
            _train_epoch(run, train_data, seed, workers, bar, budget)
            if state["step"] >= run.plan["total"] and state["batch"] < steps_per_epoch:
                break  # the step budget ended the run inside an epoch
            state["epoch"] += 1
            state["batch"] = 0
            if run.main and val_data is not None and eval_every and state["epoch"] % eval_every == 0:
                _evaluate(run, val_data)
        if run.main and val_data is not None and budgeted and (
                not history["evals"] or history["evals"][-1]["step"] != state["step"]):
            _evaluate(run, val_data)  # a budgeted run ends with an evaluation
    finally:
        bar.close()


def _train_epoch(run: _Run, train_data, seed: int, workers: int, bar, budget) -> None:
    """The rest of the current epoch (all of it, unless resumed mid-epoch), step by step, until the plan ends."""
    state = run.state
    batches = _epoch_batches(len(train_data), run.batch_size, seed, state["epoch"], True, run.rank, run.world)
    # its own generator: a DataLoader iterator otherwise draws a seed from the global RNG, and a resumed
    # run, which starts one mid-epoch, would see different augmentations from there on
    loader = DataLoader(train_data, batch_sampler=batches[state["batch"]:], collate_fn=collate_fn, num_workers=workers,
                        generator=torch.Generator().manual_seed(seed * 100003 + state["epoch"]))
    for images, targets in loader:
        if state["step"] >= run.plan["total"]:
            break
        t0 = time.perf_counter()
        values = _step(run, images, targets)
        if budget is not None:
            budget.after_step(run, bar)
        _after_step(run, values, len(images), t0, bar)


def _step(run: _Run, images, targets) -> dict[str, float]:
    """One optimiser step on one batch: the losses (under autocast), stop if one is not finite, backward, clip,
    step, schedule. Returns the loss values."""
    device = run.device
    images = [img.to(device, non_blocking=True) for img in images]
    targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
    with torch.autocast(device.type, dtype=run.amp_dtype, enabled=run.use_amp), _input_size(run.model, _train_size_now(run)):
        losses = run.net(images, targets)
    values = {k: float(v.detach()) for k, v in losses.items()}
    _stop_if_diverged(run, values)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(sum(losses.values())).backward()
    if run.clip_grad_norm:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.params, run.clip_grad_norm)
    run.updating = True
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    run.state["step"] += 1
    run.state["batch"] += 1
    run.updating = False
    return values


def _train_size_now(run: _Run) -> int | None:
    """The input size of this step: train_size's k-th size during the k-th equal share of the planned steps."""
    if run.train_size is None:
        return None
    share = run.state["step"] * len(run.train_size) // max(1, run.plan["total"])
    return run.train_size[min(share, len(run.train_size) - 1)]


@contextmanager
def _input_size(model, size: int | None):
    """The model's input size set to `size` for one forward pass (its max_size scaled alike), then restored: the
    steps train small while evaluations, checkpoints and later use see the model's own size."""
    if size is None:
        yield
        return
    kept = model.cfg
    model.cfg = kept.replace(min_size=size, max_size=max(size, round(model.max_size * size / model.min_size)))
    try:
        yield
    finally:
        model.cfg = kept


def _stop_if_diverged(run: _Run, values: dict[str, float]) -> None:
    """TrainingDiverged if a loss is NaN or infinite (in any process), saying when, which term, and what to try."""
    step, path = run.state["step"], run.ckpt_path
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if run.world > 1:  # one process's NaN stops them all (else the others wait for it forever)
        flag = torch.tensor([float(bool(bad))], device=run.device)
        torch.distributed.all_reduce(flag)
        if flag.item() and not bad:
            raise TrainingDiverged(f"step {step}: a loss became NaN or infinite in another process")
    if bad:
        kept = f"the last good checkpoint is {path} (step {_saved_step(path)})" if path and os.path.exists(path) \
            else "no checkpoint was written (pass out_dir=)"
        raise TrainingDiverged(
            f"step {step}: the {bad[0]} loss is {values[bad[0]]} (lr {run.optimizer.param_groups[0]['lr']:.3g}). "
            f"{kept}. Try a lower learning rate (the linear scaling rule gives {scaled_lr(run.batch_size, run.base_lr):g} "
            f"for batch {run.batch_size}), more warm-up, or gradient clipping.")


PROBE_STEPS = 5  # a time budget times this many steps (after the first) before fitting the schedule


class _Budget:
    """A time budget (`minutes=`): step 1 pays one-off costs, steps 2 .. PROBE_STEPS + 1 are timed, and then the plan
    (total steps and warm-up) is refitted to the steps that fit the budget."""

    def __init__(self, minutes: float, warmup_steps: int | None, schedule: str, verbose: bool):
        self.minutes, self.warmup_steps, self.schedule, self.verbose = minutes, warmup_steps, schedule, verbose
        self.start = None

    def after_step(self, run: _Run, bar) -> None:
        step, plan = run.state["step"], run.plan
        if step == 1:
            self.start = time.perf_counter()  # the first step pays one-off costs: time the next ones
        elif step == PROBE_STEPS + 1 and self.start is not None:
            per_step = (time.perf_counter() - self.start) / PROBE_STEPS
            plan["total"] = fit_steps_to_budget(self.minutes * 60, per_step, step)
            if self.warmup_steps is None:
                plan["warmup"] = min(500, plan["total"] // 10)
            bar.total = plan["total"]
            bar.refresh()
            if self.verbose:
                print(f"{per_step:.2f} s per step over steps 2-{PROBE_STEPS + 1}: {plan['total']} steps fit "
                      f"{self.minutes:g} minutes (warm-up {plan['warmup']}, {self.schedule} schedule)")


def fit_steps_to_budget(seconds: float, seconds_per_step: float, done: int) -> int:
    """How many steps in all fit `seconds`, `done` of them already taken (at least done + 1), keeping 5% of the budget
    for what the steps do not measure (the loader's start of an epoch, checkpoints)."""
    return max(done + 1, int(0.95 * seconds / max(seconds_per_step, 1e-9)))


def _after_step(run: _Run, values: dict[str, float], num_images: int, t0: float, bar) -> None:
    """Log the step (every `log_every` steps and the last), show it, tell the callbacks, checkpoint when due."""
    state = run.state
    record = {"step": state["step"], "epoch": state["epoch"], "lr": run.optimizer.param_groups[0]["lr"], **values,
              "images_per_s": num_images / (time.perf_counter() - t0)}
    if state["step"] % run.log_every == 0 or state["step"] == run.plan["total"]:
        run.history["steps"].append(record)
        _log(run, record)
    bar.update(1)
    bar.set_postfix(cls=f"{values['classification']:.3f}", box=f"{values['bbox_regression']:.3f}",
                    img_s=f"{record['images_per_s']:.1f}")
    _emit(run, "step", record)
    if run.checkpoint_every and state["step"] % run.checkpoint_every == 0:
        _checkpoint(run)


def _evaluate(run: _Run, val_data) -> None:
    """COCO AP on the validation data (rank 0), recorded in the history and the log, and told to the callbacks."""
    from .evaluate import evaluate

    result = evaluate(run.model, val_data, batch_size=run.batch_size, device=run.device, progress=False)
    run.model.train()
    summary = {"step": run.state["step"], "epoch": run.state["epoch"],
               **{k: result[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")}}
    run.history["evals"].append(summary)
    _log(run, summary)
    _emit(run, "eval", summary)


def _log(run: _Run, record: dict) -> None:
    """One line of out_dir/metrics.jsonl (rank 0 only)."""
    if run.out_dir:
        with open(os.path.join(run.out_dir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")


def _emit(run: _Run, event: str, info: dict) -> None:
    for cb in run.callbacks:
        cb(event, info)


def _checkpoint(run: _Run) -> None:
    """The whole run, atomically, to out_dir/checkpoint.pt: what `resume=` needs to continue exactly."""
    if run.ckpt_path:
        save_checkpoint(run.ckpt_path, run.model, run.optimizer, run.scheduler, run.scaler,
                        {**run.state, "history": run.history, "plan": run.plan})


def _saved_step(path: str) -> int:
    try:
        return load_checkpoint(path)["state"]["step"]
    except Exception:  # pragma: no cover - only used in an error message
        return -1
