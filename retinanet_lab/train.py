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
- Fine-tuning: `replace_classifier` (new classes) and `freeze_backbone` (weights and BatchNorm statistics).
"""

from __future__ import annotations

import json
import math
import os
import random
import time

import torch
from torch.utils.data import DataLoader

from .checkpoint import load_checkpoint, load_model
from .data.loader import collate_fn, default_num_workers
from .heads import new_classifier

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
    the prior (section 4.1); everything else keeps its weights."""
    sub = model.class_subnet
    prior = prior_prob if prior_prob is not None else model._architecture["prior_prob"]
    sub.logits = new_classifier(sub.logits, sub.num_anchors, num_classes, prior)
    sub.num_classes = num_classes
    model._architecture.update(num_classes=num_classes, class_names=list(class_names) if class_names else None)
    return model


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
    model._architecture.update(trainable_backbone_layers=0, frozen_bn=True)
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
        minutes: float | None = None) -> dict:
    """Train `model` on `train_data` (see the module docstring). Returns {"steps": [...], "evals": [...]}.

    The length of the run is `epochs` passes over the data, or `steps` optimiser steps (epochs then run as needed:
    on a small dataset a number of epochs can mean a handful of steps), or what fits in `minutes`: the first
    PROBE_STEPS steps are timed and the schedule (warm-up, then cosine or step decay) is fitted to the number of
    steps that fit the budget, with a final evaluation after it. With `steps` or `minutes`, `eval_every` counts
    epochs as before and the run also ends with an evaluation.
    """
    from tqdm.auto import tqdm

    if len(train_data) == 0:
        raise ValueError("train_data is empty")
    rank, world, device, started = _distributed(_device(device))
    main = rank == 0
    progress, verbose, out_dir = progress and main, verbose and main, out_dir if main else None
    torch.manual_seed(seed + rank)  # ranks augment differently
    random.seed(seed + rank)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    model.to(device).train()
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if steps is not None and minutes is not None:
        raise ValueError("give fit either steps= or minutes=, not both")
    if (steps is not None and steps < 1) or (minutes is not None and not minutes > 0) or epochs < 1:
        raise ValueError(f"the run must have a length: epochs={epochs}, steps={steps}, minutes={minutes}")
    if minutes is not None and world > 1:
        raise ValueError("minutes= times the steps of one process; with several processes give steps= instead")
    steps_per_epoch = len(_epoch_batches(len(train_data), batch_size, seed, 0, True, rank, world))
    total = steps if steps is not None else epochs * steps_per_epoch
    if minutes is not None:  # a first guess, until the probe steps have been timed
        total = max(PROBE_STEPS + 1, steps_per_epoch * epochs)
    if steps is not None or minutes is not None:
        epochs = 10**9  # the step budget ends the run
    warmup = min(500, total // 10) if warmup_steps is None else warmup_steps
    plan = {"total": total, "warmup": warmup}  # the scheduler reads it: a time budget refits it after the probe
    lr_given = lr is not None
    lr = scaled_lr(batch_size * world, base_lr) if lr is None else lr
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    elif optimizer == "adamw":
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"optimizer must be 'sgd' (paper) or 'adamw', got {optimizer!r}")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, plan["total"], plan["warmup"], schedule))
    use_amp = (device.type == "cuda") if amp is None else amp
    amp_dtype = torch.bfloat16 if (device.type != "cuda" or torch.cuda.is_bf16_supported()) else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)
    state = {"step": 0, "epoch": 0, "batch": 0}
    history = {"steps": [], "evals": []}
    ckpt_path = os.path.join(out_dir, "checkpoint.pt") if out_dir else None
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    if resume:
        path = ckpt_path if resume is True else resume
        if path and os.path.exists(path):
            ckpt = load_checkpoint(path, map_location=device)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            if "scaler" in ckpt:
                scaler.load_state_dict(ckpt["scaler"])
            state = dict(ckpt["state"])
            history = state.pop("history", history)
            saved_plan = state.pop("plan", {})
            if minutes is not None:  # a time-budgeted run keeps the plan it fitted; otherwise the arguments decide
                plan.update(saved_plan)
            torch.set_rng_state(ckpt["rng"]["torch"].cpu())
            random.setstate((3, tuple(ckpt["rng"]["python"]), None))
            if ckpt["rng"]["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all([s.cpu() for s in ckpt["rng"]["cuda"]])
            if verbose:
                print(f"resumed from {path} at step {state['step']} (epoch {state['epoch']}, batch {state['batch']})")
        elif resume is not True:
            raise FileNotFoundError(f"resume checkpoint not found: {path}")
    if verbose:
        where = f"{world} processes on {device.type}" if world > 1 else str(device)
        rule = scaled_lr(batch_size * world, base_lr)
        if not lr_given:
            how = f"{base_lr:g} x {batch_size * world}/16 by the linear scaling rule"
        elif isinstance(optimizer, torch.optim.AdamW):
            how = "given; AdamW's rate is not scaled with the batch"
        else:
            how = f"given; the linear scaling rule would give {rule:g} for batch {batch_size * world}"
        length = (f"{minutes:g} minute{'s' if minutes != 1 else ''} (the first {PROBE_STEPS} steps are timed, then the schedule fits the budget)"
                  if minutes is not None else f"{total} steps" + ("" if steps is not None else f" ({epochs} epochs x {steps_per_epoch})"))
        print(f"training on {where} for {length}; {type(optimizer).__name__}, lr = {lr:g} ({how}), "
              f"{plan['warmup']} warm-up steps, {schedule} schedule" + (f", AMP {amp_dtype}" if use_amp else ""))

    def checkpoint():
        if ckpt_path:
            save_checkpoint(ckpt_path, model, optimizer, scheduler, scaler, {**state, "history": history, "plan": plan})

    def evaluate_now():
        from .evaluate import evaluate

        result = evaluate(model, val_data, batch_size=batch_size, device=device, progress=False)
        model.train()
        summary = {"step": state["step"], "epoch": state["epoch"],
                   **{k: result[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")}}
        history["evals"].append(summary)
        log(summary)
        emit("eval", summary)

    budget_start = None

    def log(record):
        if out_dir:
            with open(os.path.join(out_dir, "metrics.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")

    def emit(event, info):
        for cb in callbacks:
            cb(event, info)

    workers = 0 if deterministic else (default_num_workers() if num_workers is None else num_workers)
    bar = tqdm(total=plan["total"], initial=state["step"], desc="fit", disable=not progress, dynamic_ncols=True)
    history["stopped"] = False
    try:
        while state["epoch"] < epochs and state["step"] < plan["total"]:
            batches = _epoch_batches(len(train_data), batch_size, seed, state["epoch"], True, rank, world)[state["batch"]:]
            # its own generator: a DataLoader iterator otherwise draws a seed from the global RNG, and a resumed
            # run, which starts one mid-epoch, would see different augmentations from there on
            loader = DataLoader(train_data, batch_sampler=batches, collate_fn=collate_fn, num_workers=workers,
                                generator=torch.Generator().manual_seed(seed * 100003 + state["epoch"]))
            for images, targets in loader:
                if state["step"] >= plan["total"]:
                    break
                t0 = time.perf_counter()
                images = [img.to(device, non_blocking=True) for img in images]
                targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    losses = net(images, targets)
                values = {k: float(v.detach()) for k, v in losses.items()}
                bad = [k for k, v in values.items() if not math.isfinite(v)]
                if world > 1:  # one process's NaN stops them all (else the others wait for it forever)
                    flag = torch.tensor([float(bool(bad))], device=device)
                    torch.distributed.all_reduce(flag)
                    if flag.item() and not bad:
                        raise TrainingDiverged(f"step {state['step']}: a loss became NaN or infinite in another process")
                if bad:
                    kept = f"the last good checkpoint is {ckpt_path} (step {_saved_step(ckpt_path)})" if ckpt_path \
                        and os.path.exists(ckpt_path) else "no checkpoint was written (pass out_dir=)"
                    raise TrainingDiverged(
                        f"step {state['step']}: the {bad[0]} loss is {values[bad[0]]} (lr {optimizer.param_groups[0]['lr']:.3g}). "
                        f"{kept}. Try a lower learning rate (the linear scaling rule gives {scaled_lr(batch_size, base_lr):g} "
                        f"for batch {batch_size}), more warm-up, or gradient clipping.")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(sum(losses.values())).backward()
                if clip_grad_norm:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                state["step"] += 1
                state["batch"] += 1
                if minutes is not None and main:
                    if state["step"] == 1:
                        budget_start = time.perf_counter()  # the first step pays one-off costs: time the next ones
                    elif state["step"] == PROBE_STEPS + 1 and budget_start is not None:
                        per_step = (time.perf_counter() - budget_start) / PROBE_STEPS
                        plan["total"] = fit_steps_to_budget(minutes * 60, per_step, state["step"])
                        if warmup_steps is None:
                            plan["warmup"] = min(500, plan["total"] // 10)
                        bar.total = plan["total"]
                        bar.refresh()
                        if verbose:
                            print(f"{per_step:.2f} s per step over steps 2-{PROBE_STEPS + 1}: {plan['total']} steps fit "
                                  f"{minutes:g} minutes (warm-up {plan['warmup']}, {schedule} schedule)")
                record = {"step": state["step"], "epoch": state["epoch"], "lr": optimizer.param_groups[0]["lr"], **values,
                          "images_per_s": len(images) / (time.perf_counter() - t0)}
                if state["step"] % log_every == 0 or state["step"] == plan["total"]:
                    history["steps"].append(record)
                    log(record)
                bar.update(1)
                bar.set_postfix(cls=f"{values['classification']:.3f}", box=f"{values['bbox_regression']:.3f}",
                                img_s=f"{record['images_per_s']:.1f}")
                emit("step", record)
                if checkpoint_every and state["step"] % checkpoint_every == 0:
                    checkpoint()
            if state["step"] >= plan["total"] and state["batch"] < steps_per_epoch:
                break  # the step budget ended the run inside an epoch
            state["epoch"] += 1
            state["batch"] = 0
            if main and val_data is not None and eval_every and state["epoch"] % eval_every == 0:
                evaluate_now()
        if main and val_data is not None and (steps is not None or minutes is not None) and (
                not history["evals"] or history["evals"][-1]["step"] != state["step"]):
            evaluate_now()  # a budgeted run ends with an evaluation
    except StopTraining:
        history["stopped"] = True
        if verbose:
            print(f"stopped by a callback at step {state['step']} of {plan['total']}")
    finally:
        bar.close()
    if started:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    checkpoint()
    emit("end", {"step": state["step"], "history": history, "stopped": history["stopped"]})
    return history


PROBE_STEPS = 5  # a time budget times this many steps (after the first) before fitting the schedule


def fit_steps_to_budget(seconds: float, seconds_per_step: float, done: int) -> int:
    """How many steps in all fit `seconds`, `done` of them already taken (at least done + 1), keeping 5% of the budget
    for what the steps do not measure (the loader's start of an epoch, checkpoints)."""
    return max(done + 1, int(0.95 * seconds / max(seconds_per_step, 1e-9)))


def _saved_step(path: str) -> int:
    try:
        return load_checkpoint(path)["state"]["step"]
    except Exception:  # pragma: no cover - only used in an error message
        return -1
