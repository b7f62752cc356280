"""Train an MLP 3-4-4-1 with tanh on the notebooks' four-sample toy set, by plain gradient descent.

Each step is the notebooks' loop: forward all four samples, mean squared error against the targets, zero the
gradients (they accumulate, so forgetting this is the classic bug), backward(), then move every parameter a
small step against its gradient. We stop once the loss is under 0.01.

Usage: python examples/04_train_mlp.py
"""

from __future__ import annotations

import sys

import arenagrad
from arenagrad.nn import MLP

XS = [
    [2.0, 3.0, -1.0],
    [3.0, -1.0, 0.5],
    [0.5, 1.0, 1.0],
    [1.0, 1.0, -1.0],
]
YS = [1.0, -1.0, -1.0, 1.0]
LEARNING_RATE = 0.1
TARGET_LOSS = 0.01
MAX_STEPS = 1000


def main() -> int:
    # tanh on the output too, as in the notebooks: the targets are +-1, tanh's range.
    model = MLP(3, [4, 4, 1], activation="tanh", out_activation="tanh", seed=0)
    print(f"{model} with {len(model.parameters())} parameters, learning rate {LEARNING_RATE}")
    for step in range(1, MAX_STEPS + 1):
        predictions = [model(x) for x in XS]
        loss = arenagrad.sum((p - y) ** 2 for p, y in zip(predictions, YS)) / len(YS)
        model.zero_grad()
        loss.backward()
        for p in model.parameters():
            p.data -= LEARNING_RATE * p.grad
        if step == 1 or step % 10 == 0 or loss.data < TARGET_LOSS:
            print(f"step {step:4d}  loss {loss.data:.6f}")
        if loss.data < TARGET_LOSS:
            break
    else:
        print(f"the loss is still {loss.data:.6f} after {MAX_STEPS} steps")
        return 1
    print(f"loss under {TARGET_LOSS} after {step} steps")
    print("targets:    ", "  ".join(f"{y:+.4f}" for y in YS))
    print("predictions:", "  ".join(f"{p.data:+.4f}" for p in predictions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
