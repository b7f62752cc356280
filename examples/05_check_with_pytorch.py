"""The notebooks' tanh neuron in PyTorch (float64) and in arenagrad: the same value and gradients.

PyTorch computes o = tanh(x1*w1 + x2*w2 + b) on 0-d float64 tensors with requires_grad=True; arenagrad on
Values. Both run in double precision, so every gradient must agree to 1e-12.

Usage: python examples/05_check_with_pytorch.py   (needs torch: pip install 'arenagrad[bench]')
"""

from __future__ import annotations

import sys

from arenagrad import Value

BIAS = 6.8813735870195432
INPUTS = {"x1": 2.0, "x2": 0.0, "w1": -3.0, "w2": 1.0, "b": BIAS}
TOLERANCE = 1e-12


def with_arenagrad() -> tuple[float, dict[str, float]]:
    v = {name: Value(data, label=name) for name, data in INPUTS.items()}
    o = (v["x1"] * v["w1"] + v["x2"] * v["w2"] + v["b"]).tanh()
    o.backward()
    return o.data, {name: value.grad for name, value in v.items()}


def with_torch(torch) -> tuple[float, dict[str, float]]:
    t = {name: torch.tensor(data, dtype=torch.float64, requires_grad=True) for name, data in INPUTS.items()}
    o = torch.tanh(t["x1"] * t["w1"] + t["x2"] * t["w2"] + t["b"])
    o.backward()
    return o.item(), {name: tensor.grad.item() for name, tensor in t.items()}


def main() -> int:
    try:
        import torch
    except ImportError:
        print("this example needs PyTorch: pip install 'arenagrad[bench]'")
        return 1
    o_ours, grads_ours = with_arenagrad()
    o_torch, grads_torch = with_torch(torch)

    print(f"{'':<6}{'arenagrad':>22}{'pytorch':>22}{'difference':>12}")
    rows = [("o", o_ours, o_torch)] + [(f"d{n}", grads_ours[n], grads_torch[n]) for n in INPUTS]
    worst = 0.0
    for name, ours, theirs in rows:
        worst = max(worst, abs(ours - theirs))
        print(f"{name:<6}{ours:>22.16f}{theirs:>22.16f}{abs(ours - theirs):>12.1e}")
    if worst > TOLERANCE:
        print(f"arenagrad and PyTorch differ by {worst:.1e} > {TOLERANCE:g}")
        return 1
    print(f"arenagrad and PyTorch agree to {TOLERANCE:g} (largest difference {worst:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
