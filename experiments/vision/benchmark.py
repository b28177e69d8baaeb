"""Throughput of one GEDI training step (with its SGLD steps) against its floor.

    python -m experiments.vision.benchmark                       # CIFAR shape, F=128, batch 64, 20 SGLD steps
    python -m experiments.vision.benchmark --shape 1 28 28 --width 32 --device cuda --amp

For one batch of the given shape it times, after warm-up:

- ``plain``: one forward-backward of the batch through the network (``loss = mean energy``) and an
  Adam step: the floor of any training step;
- ``gedi_no_gen``: the discriminative GEDI step (two forward passes: the batch and its augmented view);
- ``gedi``: the full GEDI step: SGLD (``--sgld-steps`` forward-backward passes w.r.t. the input on a
  batch of buffer samples), the energies of data and samples, the invariance and prior terms, backward,
  Adam step.

It prints images/s of each (training images per second, the SGLD samples not counted) and the ratio
``gedi / plain``: the step costs at most about ``sgld_steps + 3`` forward-backward passes (an SGLD pass
needs the input gradient only, no weight gradients, so it is cheaper than a training pass). Results are printed as a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=[3, 32, 32], metavar=("C", "H", "W"))
    parser.add_argument("--width", type=int, default=128, help="ResNet-8 channels F")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sgld-steps", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions of each step (after one warm-up)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from gedi_core.presets import vision_config
    from gedi_core.devices import mixed_precision
    from gedi_core.data.augment import ImageAugment
    from gedi_core.methods import build_method

    shape = tuple(args.shape)
    dataset = "cifar10" if shape[0] == 3 else "fashion-mnist"
    device = torch.device(args.device)
    x = (torch.rand(args.batch_size, *shape) * 2 - 1).to(device)
    results = {}
    for name in ("plain", "gedi_no_gen", "gedi"):
        cfg = vision_config(dataset, "gedi_no_gen" if name == "gedi_no_gen" else "gedi",
                            model={"width": args.width, "proj_hidden": 2 * args.width, "proj_dim": args.width},
                            sgld={"steps": args.sgld_steps}, amp=args.amp, device=args.device)
        method = build_method(cfg, shape, ImageAugment(hflip=shape[0] == 3)).to(device)
        opt = torch.optim.Adam(method.parameters(), lr=cfg.lr)

        def step() -> None:
            with mixed_precision(cfg.amp, device):
                if name == "plain":
                    loss = method.model.energy(x).mean()
                else:
                    loss, _ = method.training_step(x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step()  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(args.reps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        sec = (time.perf_counter() - t0) / args.reps
        results[name] = {"seconds_per_step": round(sec, 4), "images_per_s": round(args.batch_size / sec, 1)}
    ratio = results["gedi"]["seconds_per_step"] / results["plain"]["seconds_per_step"]
    print(f"batch {args.batch_size} x {shape}, ResNet-8 F={args.width}, {args.sgld_steps} SGLD steps, "
          f"device {args.device}{' (amp)' if args.amp else ''}, {torch.get_num_threads()} thread(s), "
          f"{os.cpu_count()} CPUs")
    print(f"{'step':<14}{'s/step':>10}{'images/s':>12}")
    for name, r in results.items():
        print(f"{name:<14}{r['seconds_per_step']:>10.4f}{r['images_per_s']:>12.1f}")
    print(f"gedi / plain time ratio: {ratio:.1f} (at most about {args.sgld_steps + 3}: {args.sgld_steps} SGLD "
          f"passes + data, samples, augmented view; an SGLD backward needs no weight gradients, so less)")
    print(json.dumps({"shape": list(shape), "width": args.width, "batch_size": args.batch_size,
                      "sgld_steps": args.sgld_steps, "device": args.device, "amp": args.amp, **results,
                      "gedi_over_plain": round(ratio, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
