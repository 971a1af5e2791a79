"""LipschitzLR: SGD at ``lr = multiplier / L``, ``L`` the closed-form Lipschitz constant, on sklearn's digits.

Run::

    python examples/lipschitz_lr.py
    python examples/lipschitz_lr.py --epochs 40 --multiplier 0.5 --seed 1

What it shows: :class:`theorylr.LipschitzLR` wraps a plain ``torch.optim.SGD`` whose ``lr`` is the multiplier (1.0
is the paper's choice). A forward hook on the input of the last ``nn.Linear`` records each training batch's
penultimate activations; ``scheduler.step()``, once per epoch, sets ``lr = multiplier / L`` with ``L`` the largest
batch constant of the epoch just finished. The first epoch has no previous one: without
``initial_lr`` (as here) its lr is set at the first ``optimizer.step()`` from the first batch. ``L`` is the
rigorous one (``rigorous=True``), a true bound on the last layer's gradient norm: the paper's softmax constant
``(k-1) K_z / (k m)`` is not a bound, and here it sets a first lr near 7.7, from which SGD diverges in the first
epoch. Each epoch prints the training loss, the test accuracy, and the lr and ``L`` of that epoch from
``scheduler.history``.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import theorylr
from theorylr.data import load_dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=100, help="1348 training examples: 13 of 100, one of 48")
    parser.add_argument("--multiplier", type=float, default=1.0, help="the optimizer's lr (1.0 = the paper)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    digits = load_dataset("digits", seed=args.seed)  # standardised with training statistics, stratified split
    x_train, y_train, x_test, y_test = digits.x_train, digits.y_train, digits.x_test, digits.y_test
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=args.multiplier)  # lr is the multiplier
    sched = theorylr.LipschitzLR(opt, model, loss="softmax", rigorous=True)
    loss_fn = nn.CrossEntropyLoss()

    print(f"SGD, lr = {args.multiplier} / L (rigorous L), batch {args.batch_size}")
    loss = accuracy = float("nan")
    try:
        for epoch in range(args.epochs):
            model.train()
            order = torch.randperm(len(x_train))
            total, count = 0.0, 0
            for idx in order.split(args.batch_size):
                opt.zero_grad()
                batch_loss = loss_fn(model(x_train[idx]), y_train[idx])
                batch_loss.backward()
                opt.step()  # the first one sets epoch 0's lr from the first batch
                total += float(batch_loss.detach()) * len(idx)
                count += len(idx)
            loss = total / count
            model.eval()  # eval-mode passes are not recorded by the tracker
            with torch.no_grad():
                accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
            used = sched.history[-1]  # the lr this epoch ran at, and the L it came from
            print(
                f"epoch {epoch}: train loss {loss:.4f}, test accuracy {accuracy:.3f}, "
                f"lr {used['lr'][0]:.4g}, L {used['lipschitz']:.4g} ({used['source']})"
            )
            sched.step()  # once per epoch: lr for the next epoch from this epoch's batches
    finally:
        sched.close()  # removes the hooks

    last = sched.history[-1]
    print(f"next lr {last['lr'][0]:.4g} (L {last['lipschitz']:.4g})")
    print(f"final: train loss {loss:.4f}, test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
