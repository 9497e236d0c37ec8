"""How long one training step of the classroom_fast model takes at each input size, with the optimiser's step fused
(torch's fused AdamW kernel, what `fit` uses) or not (torch's for-loop AdamW), measured interleaved.

    python benchmarks/classroom_step_time.py                       # 64, 96 and 128 px, median of 8 each
    python benchmarks/classroom_step_time.py --sizes 128 --repeats 20
    python benchmarks/classroom_step_time.py --threads 1 --batch 8 & python benchmarks/classroom_step_time.py --threads 1 --batch 8
                                               # two one-thread processes of 8 images, as two cores could share 16

A step is what `fit` does: forward with the losses on 16 shapes images, backward, clip the gradient norm to 10,
the optimiser's step. The sizes and the two optimisers take turns, so a machine that slows down during the run
slows them all alike (2-core machines here vary by 1.8x within an hour: compare rows of one run, not of two).
"""

from __future__ import annotations

import argparse
import statistics
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", type=int, default=[64, 96, 128])
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, help="torch's threads (default: torch's own, one per core)")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from retinanet_lab import RetinaNet
    from retinanet_lab.data import ShapesDataset
    from retinanet_lab.presets import preset

    cfg = preset("classroom_fast")
    model = RetinaNet(5, **cfg["model"]).to(memory_format=torch.channels_last).train()
    data = ShapesDataset(args.batch, seed=0, **cfg["data"])
    images, targets = map(list, zip(*(data[i] for i in range(args.batch))))
    optimisers = {"for-loop": torch.optim.AdamW(model.parameters(), lr=1e-5),
                  "fused": torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)}

    def step(size: int, optimiser) -> float:
        start = time.perf_counter()
        model.cfg = model.cfg.replace(min_size=size, max_size=size)
        loss = sum(model(images, targets).values())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimiser.step()
        return time.perf_counter() - start

    times = {(s, name): [] for s in args.sizes for name in optimisers}
    for s, name in times:  # a first step of each: allocations and kernel choice
        step(s, optimisers[name])
    for _ in range(args.repeats):
        for s, name in times:
            times[(s, name)].append(step(s, optimisers[name]))
    print(f"{torch.get_num_threads()} threads, batch {args.batch}, median of {args.repeats}:")
    for (s, name), t in times.items():
        print(f"  {s:4d} px  {name:8s}  {1000 * statistics.median(t):7.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
