"""One prepared check of the GPU: correctness, speed against torchvision, training, the classroom bar, throughput.

    python benchmarks/gpu_check.py                     # on one CUDA GPU: about 3.5 minutes on an H100, 8 at most
    python benchmarks/gpu_check.py --smoke             # the same code on the CPU at toy sizes, under a minute
    python benchmarks/gpu_check.py --only bench flops  # some parts only

Parts (each writes its figures into one JSON, `--out`, default benchmarks/gpu_check.json, and the rows for
benchmarks/RESULTS.md are printed at the end, naming the device):

    tests      tests/test_cuda.py on the device: CUDA and CPU agree on losses and detections for the same weights and
               inputs; AMP bfloat16 and float16 give finite losses and gradients; the NaN guard and checkpoint resume
               work there (--smoke: the same tests with the CPU standing in for the GPU)
    bench      benchmarks/bench_vs_torchvision.py's interleaved timing, same weights, one process: ResNet-50-FPN,
               batch 8 at 512 and 800 px, training step and inference, fp32 and AMP (bfloat16)
    paper      the paper preset (ResNet-50-FPN, random init: no download) trained a few hundred steps on the shapes
               world with AMP: loss at the start and the end, images/s, peak memory
    classroom  the classroom preset from scratch, evaluated after each epoch: seconds to the bar
               (AP50 >= 0.90 and AP >= 0.60 on 200 fresh images)
    flops      forward GFLOPs per image (torch.utils.flop_counter) x images/s, against the device's peak for the dtype
    layout     channels_last (NHWC) against NCHW for both detectors, AMP: training step and inference
    profile    torch.profiler of one training step of each (batch 8, 512 px, AMP): the top operators by device time and
               the host-device syncs, written as text beside the JSON (gpu_profile_ours.txt, gpu_profile_torchvision.txt)
    compile    torch.compile of our network (backbone, pyramid, subnets), AMP: the training step and inference with
               and without it, interleaved, and the seconds the compilation took

The parts run in that order under one deadline (--deadline, seconds): a part whose usual cost no longer fits is
skipped and says so, and the JSON is rewritten after every part, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

# Dense peak TFLOP/s from the vendors' data sheets (SXM parts; tensor cores for bf16/fp16, no sparsity).
PEAK_TFLOPS = {"H100": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4}, "H200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
               "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0}}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def part_tests(device: torch.device, smoke: bool) -> dict:
    """tests/test_cuda.py on `device` (RETINANET_LAB_TEST_DEVICE tells the tests which device is 'the GPU')."""
    env = {**os.environ, "RETINANET_LAB_TEST_DEVICE": device.type}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-o", "timeout=150", "-m", "cuda",
           os.path.join(ROOT, "tests", "test_cuda.py")]
    start = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    tail = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr.strip()[-300:]
    print(f"tests on {device.type}: {tail}", flush=True)
    return {"returncode": r.returncode, "summary": tail, "seconds": round(time.perf_counter() - start, 1),
            "failures": r.stdout[-3000:] if r.returncode else ""}


def part_bench(device: torch.device, smoke: bool) -> dict:
    """The interleaved benchmark against torchvision (bench_vs_torchvision), at the sizes the issue names."""
    import bench_vs_torchvision as bench

    out = {}
    sizes = [("small", 64, 2)] if smoke else [("paper", 512, 8), ("paper", 800, 8)]
    for name, size, batch in sizes:
        bench.SETTINGS[f"{name}{size}"] = {**bench.SETTINGS[name], "size": size, "batch": batch}
        for amp in (False, True):
            key = f"{name}{size}/{'amp' if amp else 'fp32'}"
            out[key] = bench.bench(f"{name}{size}", device, reps=1 if smoke else 7, warmup=1 if smoke else 2, amp=amp)
    return out


def _shapes_loader_model(preset_name: str, device, smoke: bool):
    from retinanet_lab import RetinaNet
    from retinanet_lab.presets import preset

    cfg = preset(preset_name)
    model_kw = dict(cfg["model"])
    if smoke:  # toy sizes: the same code on the CPU in seconds
        model_kw.update(backbone="resnet_tiny", fpn_channels=32, head_convs=1, head_channels=32, min_size=64, max_size=64,
                        frozen_bn=False, trainable_backbone_layers=5)
        cfg["data"].update(image_size=64)
    return cfg, RetinaNet(5, **model_kw).to(device)


def part_paper(device: torch.device, smoke: bool) -> dict:
    """The paper preset trained with AMP on the shapes world: loss falls, images/s, peak memory."""
    from retinanet_lab.data import ShapesDataset
    from retinanet_lab.train import fit

    steps, batch = (4, 2) if smoke else (300, 8)
    cfg, model = _shapes_loader_model("paper", device, smoke)
    data = ShapesDataset(steps * batch, seed=0, image_size=cfg["data"]["image_size"], difficulty=0.5)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    history = fit(model, data, steps=steps, batch_size=batch, device=device, amp=device.type == "cuda", log_every=1,
                  optimizer="sgd", progress=False, verbose=False,
                  num_workers=0 if smoke else min(12, max(1, (os.cpu_count() or 2) - 2)))
    seconds = time.perf_counter() - start
    losses = [sum(v for k, v in r.items() if k in ("classification", "bbox_regression")) for r in history["steps"]]
    k = max(1, len(losses) // 10)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    out = {"steps": steps, "batch": batch, "size": model.min_size, "seconds": round(seconds, 1),
           "images_per_s": round(steps * batch / seconds, 1), "loss_first": round(first, 4), "loss_last": round(last, 4),
           "loss_fell": last < first,
           "peak_memory_GiB": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None}
    print(f"paper preset, {steps} steps x {batch} at {model.min_size} px: loss {first:.3f} -> {last:.3f}, "
          f"{out['images_per_s']} images/s, peak {out['peak_memory_GiB']} GiB", flush=True)
    return out


def part_classroom(device: torch.device, smoke: bool) -> dict:
    """The classroom preset from scratch as `retinanet-lab train` runs it (one run, AMP on CUDA), scored after every
    epoch: the seconds of training (evaluations not counted) until AP50 >= 0.90 and AP >= 0.60."""
    from retinanet_lab.data import ShapesDataset
    from retinanet_lab.seeds import VALIDATION
    from retinanet_lab.train import fit

    cfg, model = _shapes_loader_model("classroom", device, smoke)
    images, epochs, val_images = (16, 2, 8) if smoke else (cfg["run"]["num_images"], cfg["run"]["epochs"], 200)
    data = ShapesDataset(images, seed=0, **cfg["data"])
    val = ShapesDataset(val_images, seed=VALIDATION, **cfg["data"])
    train_kw = {**cfg["train"], "batch_size": 4 if smoke else cfg["train"]["batch_size"]}
    timeline, clock = [], {"start": time.perf_counter(), "last_step": None, "in_eval": 0.0}

    def on_event(event, info):  # the clock of training alone: evaluations run between a step and the "eval" event
        now = time.perf_counter()
        if event == "step":
            clock["last_step"] = now
        elif event == "eval":
            train_s = clock["last_step"] - clock["start"] - clock["in_eval"]
            clock["in_eval"] += now - clock["last_step"]
            timeline.append({"epoch": info["epoch"], "step": info["step"], "train_seconds": round(train_s, 1),
                             "AP": round(info["AP"], 3), "AP50": round(info["AP50"], 3)})
            print(f"classroom epoch {info['epoch']}: {train_s:.0f} s of training, AP {info['AP']:.3f}, "
                  f"AP50 {info['AP50']:.3f}", flush=True)

    fit(model, data, val, epochs=epochs, device=device, eval_every=1, callbacks=[on_event], progress=False, verbose=False,
        checkpoint_every=0, **train_kw)
    reached = next((t for t in timeline if t["AP50"] >= 0.90 and t["AP"] >= 0.60), None)
    return {"timeline": timeline, "bar_reached": reached, "amp": device.type == "cuda"}


def part_layout(device: torch.device, smoke: bool) -> dict:
    """channels_last (NHWC) against the default NCHW, AMP, for both detectors: cuDNN's bf16 kernels work in NHWC,
    so NCHW pays a transposition around every convolution (the profile's nchwToNhwc / nhwcToNchw kernels)."""
    import bench_vs_torchvision as bench

    name = "small64" if smoke else "paper512"
    bench.SETTINGS[name] = {**bench.SETTINGS["small" if smoke else "paper"], "size": 64 if smoke else 512,
                            "batch": 2 if smoke else 8}
    images, targets = bench.make_batch(name, device)
    out = {"size": bench.SETTINGS[name]["size"]}
    for label, index in (("ours", 1), ("torchvision", 0)):
        nchw = bench.build_pair(name, device)[index]
        nhwc = bench.build_pair(name, device)[index].to(memory_format=torch.channels_last)
        for task, timer in (("train_step", lambda m: bench.time_train_step(m, images, targets, device, True)),
                            ("inference", lambda m: bench.time_inference(m, images, device, True))):
            timer(nchw), timer(nhwc), timer(nchw), timer(nhwc)
            times = {"nchw": [], "nhwc": []}
            for r in range(1 if smoke else 9):
                pair = (("nchw", nchw), ("nhwc", nhwc))
                for key, m in (pair if r % 2 == 0 else pair[::-1]):
                    times[key].append(timer(m))
            a, b = statistics.median(times["nchw"]), statistics.median(times["nhwc"])
            out[f"{label}/{task}"] = {"nchw_s": a, "channels_last_s": b, "speedup": a / b}
            print(f"layout {label} {task}: NCHW {a * 1e3:.1f} ms, channels_last {b * 1e3:.1f} ms, x{a / b:.2f}", flush=True)
    return out


def part_flops(device: torch.device, smoke: bool) -> dict:
    """Counted forward FLOPs per image x measured images/s (inference), against the device's peak."""
    from torch.utils.flop_counter import FlopCounterMode

    from retinanet_lab import RetinaNet

    size, batch, reps = (64, 2, 2) if smoke else (512, 8, 10)
    toy = dict(backbone="resnet_tiny", fpn_channels=32, head_convs=1, head_channels=32, frozen_bn=False) if smoke else {}
    model = RetinaNet(80, min_size=size, max_size=size, **{"backbone": "resnet50", **toy}).to(device).eval()
    images = [torch.rand(3, size, size, device=device) for _ in range(batch)]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(images)
    gflops = counter.get_total_flops() / batch / 1e9
    out = {"size": size, "batch": batch, "forward_GFLOPs_per_image": round(gflops, 2)}
    for dtype in ("fp32", "bf16"):
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            model(images)
            sync(device)
            start = time.perf_counter()
            for _ in range(reps):
                model(images)
            sync(device)
        per_s = reps * batch / (time.perf_counter() - start)
        achieved = gflops * per_s / 1e3  # TFLOP/s
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in device_name(device)), {}).get(
            "tf32" if dtype == "fp32" and torch.backends.cudnn.allow_tf32 else dtype)  # the convolutions' precision
        out[dtype] = {"images_per_s": round(per_s, 1), "achieved_TFLOPs": round(achieved, 3),
                      "peak_TFLOPs": peak, "share_of_peak": round(achieved / peak, 4) if peak else None}
        print(f"flops {dtype}: {gflops:.1f} GFLOPs/image x {per_s:.1f} images/s = {achieved:.2f} TFLOP/s"
              + (f" = {achieved / peak:.1%} of {peak} peak" if peak else ""), flush=True)
    return out


def _profile_table(model, images, targets, device, amp: bool) -> tuple[str, dict]:
    import bench_vs_torchvision as bench
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        bench.time_train_step(model, images, targets, device, amp)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step_s = bench.time_train_step(model, images, targets, device, amp)
    events = prof.key_averages()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    # host-device syncs (an item(), a nonzero, a copy to the host) and kernel launches, however this CUDA names them
    syncs = {e.key: e.count for e in events
             if any(k in e.key for k in ("Synchronize", "Memcpy", "Launch", "aten::item", "aten::nonzero", "_local_scalar"))}
    return events.table(sort_by=sort, row_limit=30, max_name_column_width=60), {"step_s": round(step_s, 4), **syncs}


def part_profile(device: torch.device, smoke: bool, out_dir: str = HERE) -> dict:
    """One profiled training step of each, AMP: where the time goes, and how often the host waits for the device."""
    import bench_vs_torchvision as bench

    name = "small64" if smoke else "paper512"
    base = "small" if smoke else "paper"
    bench.SETTINGS[name] = {**bench.SETTINGS[base], "size": 64 if smoke else 512, "batch": 2 if smoke else 8}
    tv, ours = bench.build_pair(name, device)
    images, targets = bench.make_batch(name, device)
    out = {}
    for label, model in (("torchvision", tv), ("ours", ours)):
        table, counts = _profile_table(model, images, targets, device, amp=True)
        path = os.path.join(out_dir, f"gpu_profile_{label}.txt")
        with open(path, "w") as f:
            f.write(table)
        out[label] = {**counts, "table": os.path.basename(path)}
        print(f"profile {label}: {counts}", flush=True)
    return out


def _compile_network(model, backend: str) -> None:
    """Compile our convolutional network in place; the Python around it (matching, loss, decoding) stays eager."""
    for name in ("backbone", "fpn", "class_subnet", "box_subnet"):
        getattr(model, name).compile(backend=backend)


def part_compile(device: torch.device, smoke: bool) -> dict:
    """torch.compile of our network against the same model eager, AMP: does it pay, and what does compiling cost?
    (--smoke compiles with the 'eager' backend: the code path in seconds, no figure worth reading.)"""
    import bench_vs_torchvision as bench

    name = "small64" if smoke else "paper512"
    bench.SETTINGS[name] = {**bench.SETTINGS["small" if smoke else "paper"], "size": 64 if smoke else 512,
                            "batch": 2 if smoke else 8}
    images, targets = bench.make_batch(name, device)
    eager, compiled = bench.build_pair(name, device)[1], bench.build_pair(name, device)[1]
    compiled.load_state_dict(eager.state_dict())
    _compile_network(compiled, "eager" if smoke else "inductor")
    train = lambda m: bench.time_train_step(m, images, targets, device, True)  # noqa: E731
    infer = lambda m: bench.time_inference(m, images, device, True)  # noqa: E731
    start = time.perf_counter()
    train(compiled), infer(compiled)
    out = {"compile_s": round(time.perf_counter() - start, 1)}
    for task, timer in (("train_step", train), ("inference", infer)):
        timer(eager), timer(compiled)
        times = {"eager": [], "compiled": []}
        for r in range(2 if smoke else 7):  # interleaved, alternating who goes first
            pair = (("eager", eager), ("compiled", compiled))
            for key, m in (pair if r % 2 == 0 else pair[::-1]):
                times[key].append(timer(m))
        e, c = statistics.median(times["eager"]), statistics.median(times["compiled"])
        out[task] = {"eager_s": e, "compiled_s": c, "speedup": e / c}
        print(f"compile {task}: eager {e * 1e3:.1f} ms, compiled {c * 1e3:.1f} ms, x{e / c:.2f} "
              f"(compiling took {out['compile_s']:.0f} s)", flush=True)
    return out


PARTS = {"tests": part_tests, "bench": part_bench, "flops": part_flops, "profile": part_profile, "layout": part_layout,
         "paper": part_paper, "classroom": part_classroom, "compile": part_compile}
# What each part usually costs on one H100 (seconds), so the deadline can skip what no longer fits.
COST_S = {"tests": 40, "bench": 30, "flops": 10, "profile": 10, "layout": 20, "paper": 40, "classroom": 150, "compile": 100}


def result_rows(report: dict) -> list[str]:
    """Rows for benchmarks/RESULTS.md."""
    rows = [f"Device: {report['device']}, torch {report['torch']}, {report['date']}, `{report['command']}`", ""]
    if "tests" in report:
        rows.append(f"- tests/test_cuda.py: {report['tests']['summary']}")
    for key, r in report.get("bench", {}).items():
        for task, t in r.items():
            rows.append(f"- {key} {task}: torchvision {t['torchvision_s'] * 1e3:.1f} ms, ours {t['ours_s'] * 1e3:.1f} ms, "
                        f"x{t['speedup']:.2f}")
    if "paper" in report:
        p = report["paper"]
        rows.append(f"- paper preset with AMP, {p['steps']} steps x {p['batch']} at {p['size']} px: loss {p['loss_first']} -> "
                    f"{p['loss_last']}, {p['images_per_s']} images/s, peak {p['peak_memory_GiB']} GiB")
    if "classroom" in report:
        c = report["classroom"]
        reached = c["bar_reached"]
        rows.append("- classroom preset: " + (f"bar reached after {reached['train_seconds']} s of training (epoch "
                                              f"{reached['epoch']}, AP {reached['AP']}, AP50 {reached['AP50']})"
                                              if reached else f"bar not reached: {c['timeline'][-1]}"))
    for key, r in report.get("layout", {}).items():
        if isinstance(r, dict) and "speedup" in r:
            rows.append(f"- channels_last, {key} (AMP, {report['layout']['size']} px): NCHW {r['nchw_s'] * 1e3:.1f} ms, channels_last "
                        f"{r['channels_last_s'] * 1e3:.1f} ms, x{r['speedup']:.2f}")
    if "train_step" in report.get("compile", {}):
        r = report["compile"]
        rows.append(f"- torch.compile of our network, AMP (compiling {r['compile_s']} s): training step "
                    f"x{r['train_step']['speedup']:.2f}, inference x{r['inference']['speedup']:.2f} over eager")
    if "flops" in report:
        f = report["flops"]
        for dtype in ("fp32", "bf16"):
            d = f[dtype]
            rows.append(f"- throughput {dtype}: {f['forward_GFLOPs_per_image']} GFLOPs/image x {d['images_per_s']} images/s = "
                        f"{d['achieved_TFLOPs']} TFLOP/s" + (f" ({d['share_of_peak']:.1%} of {d['peak_TFLOPs']})"
                                                            if d["share_of_peak"] else ""))
    return rows


def _write_json(report: dict, path: str) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(report, f, indent=1)
    os.replace(path + ".tmp", path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="the same code on the CPU at toy sizes (under a minute)")
    p.add_argument("--only", nargs="+", choices=sorted(PARTS), help="run only these parts")
    p.add_argument("--out", default=os.path.join(HERE, "gpu_check.json"), help="the JSON report")
    p.add_argument("--deadline", type=float, default=450.0,
                   help="seconds for all parts: a part whose usual cost no longer fits is skipped (default 450)")
    args = p.parse_args(argv)
    if args.smoke:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        print("no CUDA GPU here: run with --smoke for the CPU stand-in", file=sys.stderr)
        return 2
    report = {"device": device_name(device), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
              "command": "python benchmarks/gpu_check.py" + (" --smoke" if args.smoke else ""), "smoke": args.smoke}
    start = time.perf_counter()
    failed, skipped = [], []
    for name in args.only or PARTS:
        left = args.deadline - (time.perf_counter() - start)
        if not args.smoke and left < COST_S[name]:
            skipped.append(name)
            print(f"{name}: skipped, {left:.0f} s left of the deadline and it usually takes {COST_S[name]} s", flush=True)
            continue
        part_start = time.perf_counter()
        try:
            kw = {"out_dir": os.path.dirname(os.path.abspath(args.out))} if name == "profile" else {}
            report[name] = PARTS[name](device, args.smoke, **kw)
        except Exception as e:  # one part failing must not lose the others' figures
            failed.append(name)
            report[name] = {"error": f"{type(e).__name__}: {e}"}
            print(f"{name}: FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        report.setdefault("part_seconds", {})[name] = round(time.perf_counter() - part_start, 1)
        report["seconds"] = round(time.perf_counter() - start, 1)
        _write_json(report, args.out)
    report["skipped"] = skipped
    _write_json(report, args.out)
    if not failed:
        print("\n".join(result_rows(report)))
    print(f"{report['seconds']} s; report in {args.out}" + (f"; failed: {', '.join(failed)}" if failed else "")
          + (f"; skipped: {', '.join(skipped)}" if skipped else ""))
    tests_failed = "tests" in report and report["tests"].get("returncode", 0) != 0
    return 1 if failed or tests_failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
