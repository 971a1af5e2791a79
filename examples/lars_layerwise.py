"""LARS with the usual layer-wise split and a cosine schedule on sklearn's digits.

Run::

    python examples/lars_layerwise.py
    python examples/lars_layerwise.py --epochs 40 --lr 0.05 --seed 1

What it shows: :func:`theorylr.lars_param_groups` puts every weight matrix in an adapted group (each step moves a
tensor by ``lr * trust_ratio * ||d||`` with ``trust_ratio = ||w|| / ||d||``) and the biases in a plain momentum-SGD
group without weight decay; :class:`theorylr.LARS` steps both with momentum 0.9. The learning rate follows a cosine
decay to zero: with a fixed ``lr`` every step moves a weight tensor by a fixed fraction of its norm, so the iterates
only reach a region around a minimum, while a decaying ``lr`` lets them converge (Gitman et al., 2018). Each epoch
prints the training loss, the test accuracy and the lr; the end prints each layer's last trust ratio, read from
``optimizer.state[p]["trust_ratio"]``.
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
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.02, help="peak lr (a fraction of ||w|| per step)")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    digits = load_dataset("digits", seed=args.seed)  # standardised with training statistics, stratified split
    x_train, y_train, x_test, y_test = digits.x_train, digits.y_train, digits.x_test, digits.y_test
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    groups = theorylr.lars_param_groups(model, momentum=args.momentum)  # [weights (adapted), biases (plain SGD)]
    opt = theorylr.LARS(groups, lr=args.lr, weight_decay=args.weight_decay)
    batches = (len(x_train) + args.batch_size - 1) // args.batch_size
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * batches)  # stepped per batch
    loss_fn = nn.CrossEntropyLoss()

    print(f"LARS, lr {args.lr} (cosine to 0 over {args.epochs * batches} steps), momentum {args.momentum}")
    loss = accuracy = float("nan")
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train))
        total, count = 0.0, 0
        for idx in order.split(args.batch_size):
            opt.zero_grad()
            batch_loss = loss_fn(model(x_train[idx]), y_train[idx])
            batch_loss.backward()
            opt.step()
            sched.step()
            total += float(batch_loss.detach()) * len(idx)
            count += len(idx)
        loss = total / count
        model.eval()
        with torch.no_grad():
            accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
        print(f"epoch {epoch}: train loss {loss:.4f}, test accuracy {accuracy:.3f}, lr {sched.get_last_lr()[0]:.4g}")

    names = {p: name for name, p in model.named_parameters()}
    ratios = ", ".join(f"{names[p]} {float(opt.state[p]['trust_ratio']):.3g}" for p in groups[0]["params"])
    print(f"trust ratios ||w|| / ||g + wd w|| at the last step: {ratios}")
    print(f"final: train loss {loss:.4f}, test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
