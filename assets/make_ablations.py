"""The paper's ablations in miniature, on the shapes world with the classroom model (Lin et al. 2017, Table 1
(a, b) and section 4.1), precomputed for the notebooks:

    python assets/make_ablations.py                 # both files; about 25 minutes on a 2-core CPU
    python assets/make_ablations.py --only prior    # retinanet_lab/assets/ablation_prior.json alone (about 15 minutes)
    python assets/make_ablations.py --only recipes  # only its cross-entropy recipes part (about 12 minutes)
    python assets/make_ablations.py --device cuda   # the same runs on a GPU
    python assets/make_ablations.py --only loss --resume   # finish an interrupted sweep

- retinanet_lab/assets/ablation_loss.json: cross entropy, α-balanced CE (α in {0.25, 0.5, 0.75}) and the focal loss for γ in
  {0.5, 1, 2, 5} x α in {0.25, 0.5, 0.75}, each trained from scratch for the same steps with several seeds:
  final COCO AP / AP50 / AP75 on 200 fresh images and the loss curves.
- retinanet_lab/assets/ablation_prior.json: the first iterations with the prior-probability bias π = 0.01 (the paper's
  initialisation) against π = 0.5: with the focal loss and the classroom recipe ("runs"), and with cross entropy
  and the paper's plain SGD, adding one at a time the ingredients that hide the difference ("recipes": GroupNorm in
  the subnets, gradient clipping, AdamW). The classification loss at every step.

Every run uses the classroom preset (model, data, optimiser) with a shorter schedule than the shipped model.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from retinanet_lab import RetinaNet, seeds
from retinanet_lab.data import ShapesDataset, train_transforms
from retinanet_lab.evaluate import evaluate
from retinanet_lab.presets import preset
from retinanet_lab.train import TrainingDiverged, fit

HERE = Path(__file__).resolve().parent.parent / "retinanet_lab" / "assets"  # shipped inside the package
ALPHAS = (0.25, 0.5, 0.75)
GAMMAS = (0.5, 1.0, 2.0, 5.0)

# Lin et al. 2017, Table 1 (a) and (b): ResNet-50-FPN, 600 px, COCO minival, AP in percent.
PAPER_TABLE1 = {
    "a_alpha_for_CE": {"alpha": [0.10, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999], "AP": [0.0, 10.8, 30.2, 31.1, 30.8, 28.7, 25.1]},
    "b_gamma_for_FL": {"gamma": [0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0], "alpha": [0.75, 0.75, 0.75, 0.50, 0.25, 0.25, 0.25],
                       "AP": [31.1, 31.4, 31.9, 32.9, 33.7, 34.0, 32.2]},
}


def loss_grid() -> list[tuple[str, float, float | None]]:
    grid = [("CE", 0.0, None)] + [(f"α-CE α={a:g}", 0.0, a) for a in ALPHAS]
    return grid + [(f"FL γ={g:g} α={a:g}", g, a) for g in GAMMAS for a in ALPHAS]


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"{os.cpu_count()}-core {platform.machine()} CPU"


def write(name: str, obj: dict) -> None:
    tmp = HERE / f".{name}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=None, separators=(",", ":"))
    os.replace(tmp, HERE / name)
    print("wrote", HERE / name)


def run_loss_grid(args) -> None:
    cfg = preset("classroom")
    train = ShapesDataset(args.images, seed=seeds.TRAIN, transform=train_transforms(), **cfg["data"])
    val = ShapesDataset(200, seed=seeds.VALIDATION, **cfg["data"])
    runs, done, steps = [], set(), None
    if args.resume and (HERE / "ablation_loss.json").exists():  # keep the runs an interrupted sweep finished
        previous = json.loads((HERE / "ablation_loss.json").read_text())
        if (previous.get("images"), previous.get("epochs")) == (args.images, args.epochs):
            runs.extend(previous["runs"])
            done = {(r["name"], r["seed"]) for r in runs}
            steps = previous.get("steps")
    out = {"command": "python assets/make_ablations.py --only loss", "machine": machine(args.device), "torch": torch.__version__,
           "date": datetime.date.today().isoformat(), "steps": steps, "images": args.images, "epochs": args.epochs,
           "seeds": args.seeds, "val_images": 200, "paper_table1": PAPER_TABLE1, "runs": runs}
    for seed in args.seeds:  # seed-major: every configuration has one run before any has two
        for name, gamma, alpha in loss_grid():
            if (name, seed) in done:
                continue
            torch.manual_seed(seed)
            model = RetinaNet(5, class_names=train.class_names, focal_gamma=gamma, focal_alpha=alpha, **cfg["model"])
            t0 = time.perf_counter()
            try:
                history = fit(model, train, epochs=args.epochs, seed=seed, progress=False, verbose=False, device=args.device,
                              **cfg["train"])
                r = evaluate(model, val, progress=False, device=args.device)
                result = {k: round(r[k], 4) for k in ("AP", "AP50", "AP75")}
            except TrainingDiverged as e:
                history, result = {"steps": []}, {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "diverged": str(e)}
            out["steps"] = history["steps"][-1]["step"] if history["steps"] else out["steps"]
            out["date"] = datetime.date.today().isoformat()
            runs.append({"name": name, "gamma": gamma, "alpha": alpha, "seed": seed, **result,
                         "seconds": round(time.perf_counter() - t0, 1),
                         "loss": [[s["step"], round(s["classification"], 5), round(s["bbox_regression"], 5)] for s in history["steps"]]})
            print(f"{name:18s} seed {seed}: AP {result['AP']:.3f} AP50 {result['AP50']:.3f} ({runs[-1]['seconds']} s)", flush=True)
            write("ablation_loss.json", out)  # after every run: an interrupted sweep keeps what it has


def run_prior(args) -> None:
    cfg = preset("classroom")
    train = ShapesDataset(16 * args.prior_steps, seed=seeds.TRAIN, transform=train_transforms(), **cfg["data"])
    runs = []
    out = {"command": "python assets/make_ablations.py --only prior", "machine": machine(args.device), "torch": torch.__version__,
           "date": datetime.date.today().isoformat(), "steps": args.prior_steps, "seeds": args.seeds, "loss_fn": "FL γ=2 α=0.25",
           "runs": runs}
    for prior in (0.01, 0.5):
        for seed in args.seeds:
            torch.manual_seed(seed)
            model = RetinaNet(5, prior_prob=prior, **cfg["model"])
            train_kw = {**cfg["train"], "warmup_steps": 0, "schedule": "constant"}  # the raw effect, no warm-up to hide it
            records = []
            try:
                fit(model, train, epochs=1, seed=seed, progress=False, verbose=False, device=args.device, log_every=1,
                    callbacks=[lambda e, info, records=records: records.append(info) if e == "step" else None], **train_kw)
                diverged = None
            except TrainingDiverged as e:
                diverged = str(e)
            runs.append({"prior": prior, "seed": seed, "diverged": diverged,
                         "loss": [[r["step"], round(r["classification"], 5), round(r["bbox_regression"], 5)] for r in records]})
            print(f"prior {prior}: seed {seed}: first loss {records[0]['classification']:.2f}, last {records[-1]['classification']:.3f}",
                  flush=True)
    out["recipes"] = run_recipes(args)
    out["recipes_loss_fn"] = "CE (γ = 0, no α)"
    write("ablation_prior.json", out)


# Cross entropy from π = 0.01 and π = 0.5 (the paper's §5.1: CE "without any modifications to the initialization ...
# fails quickly, with the network diverging"), with the paper's SGD and then one ingredient at a time that hides it.
RECIPES = {
    "paper": ("unnormalised subnets (as the paper's), SGD 0.01, no clipping", {"norm": None},
              {"optimizer": "sgd", "lr": 0.01, "clip_grad_norm": None}),
    "groupnorm": ("+ GroupNorm in the subnets (the classroom model)", {}, {"optimizer": "sgd", "lr": 0.01, "clip_grad_norm": None}),
    "clip": ("+ gradient clipping at norm 10", {"norm": None}, {"optimizer": "sgd", "lr": 0.01, "clip_grad_norm": 10.0}),
    "adamw": ("+ AdamW 5e-3 instead of SGD", {"norm": None}, {"optimizer": "adamw", "lr": 5e-3, "clip_grad_norm": None}),
}


def run_recipes(args) -> list[dict]:
    cfg = preset("classroom")
    train = ShapesDataset(16 * args.prior_steps, seed=seeds.TRAIN, transform=train_transforms(), **cfg["data"])
    runs = []
    for key, (label, model_kw, train_kw) in RECIPES.items():
        for prior in (0.01, 0.5):
            torch.manual_seed(0)
            model = RetinaNet(5, prior_prob=prior, focal_gamma=0.0, focal_alpha=None, **{**cfg["model"], **model_kw})
            records = []
            kw = {**cfg["train"], "warmup_steps": 0, "schedule": "constant", **train_kw}
            try:
                fit(model, train, epochs=1, seed=0, progress=False, verbose=False, device=args.device, log_every=1,
                    callbacks=[lambda e, info, records=records: records.append(info) if e == "step" else None], **kw)
                diverged = None
            except TrainingDiverged as e:
                diverged = str(e).split(")")[0] + ")"  # e.g. "step 5: the classification loss is nan (lr 0.01)"
            runs.append({"recipe": key, "label": label, "prior": prior, "seed": 0, "diverged": diverged,
                         "loss": [[r["step"], round(r["classification"], 5), round(r["bbox_regression"], 5)] for r in records]})
            last = records[-1]["classification"] if records else float("nan")
            print(f"{key:10s} prior {prior}: first loss {records[0]['classification']:.1f}, last {last:.3g}"
                  + (f", diverged ({diverged})" if diverged else ""), flush=True)
    return runs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=("loss", "prior", "recipes"), help="make one of the two files, or only the CE recipes")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds per configuration (default 0 1)")
    p.add_argument("--images", type=int, default=1920, help="training images per run (default 1920)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per run (default 2: 240 steps of 16 images)")
    p.add_argument("--prior-steps", type=int, default=100, help="steps of the prior runs (default 100)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--resume", action="store_true", help="keep the finished runs of retinanet_lab/assets/ablation_loss.json, run the rest")
    args = p.parse_args(argv)
    if args.only in (None, "prior"):
        run_prior(args)
    if args.only == "recipes":  # keep the classroom-recipe runs, redo the cross-entropy recipes
        out = json.loads((HERE / "ablation_prior.json").read_text())
        out.update(recipes=run_recipes(args), recipes_loss_fn="CE (γ = 0, no α)", date=datetime.date.today().isoformat())
        write("ablation_prior.json", out)
    if args.only in (None, "loss"):
        run_loss_grid(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
