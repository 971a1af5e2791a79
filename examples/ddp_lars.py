"""LARS under DistributedDataParallel on CPU (gloo) or GPUs (NCCL), launched by torchrun.

Run on one machine with two CPU processes (gloo on loopback)::

    torchrun --standalone --nproc_per_node=2 examples/ddp_lars.py
    torchrun --standalone --nproc_per_node=2 examples/ddp_lars.py --epochs 5 --batch-size 64 --lr 0.02
    torchrun --standalone --nproc_per_node=2 examples/ddp_lars.py --lipschitz --lr 0.1

(``--standalone`` picks a free local port; on a host whose name does not resolve to a reachable address, also set
``GLOO_SOCKET_IFNAME=lo``.) On GPUs (one process per GPU) the same script picks NCCL and ``cuda:LOCAL_RANK``::

    torchrun --standalone --nproc_per_node=8 examples/ddp_lars.py

Several machines: ``torchrun --nnodes=2 --node_rank=<0|1> --nproc_per_node=8 --rdzv_backend=c10d
--rdzv_endpoint=<host of node 0>:29500 examples/ddp_lars.py`` on each.

What it does: sklearn's digits (1797 x 64, 10 classes; no download), split across the ranks by a
``DistributedSampler``; an MLP wrapped in ``DistributedDataParallel``; layer-wise
proportional updates (:class:`theorylr.optim.lars.LARS`) with the usual split (biases without adaptation or weight
decay). After DDP's gradient all-reduce every rank holds the same gradients, so LARS's per-layer norms and steps are
those of one process on the global batch: nothing distributed is needed in the optimizer. Each epoch prints the
mean training loss over all ranks, the test accuracy, the median trust ratio, and the largest difference between
the ranks' weights (0: the replicas never drift apart). ``--lipschitz`` replaces LARS with the LipschitzLR paper's
rule: momentum SGD at ``lr = multiplier / L`` (``--lr`` is the multiplier), scheduled by
:func:`theorylr.distributed.distributed_lipschitz_lr`, whose ``L`` is the closed-form constant of the global
batches (the same on every rank, equal to one process's on the union of the data).
"""

from __future__ import annotations

import argparse
import gc
import os

import torch
import torch.distributed as dist
from sklearn.datasets import load_digits
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from theorylr.distributed import distributed_lipschitz_lr
from theorylr.optim.lars import LARS
from theorylr.optim.param_groups import lars_param_groups


def _data(device: torch.device) -> tuple[TensorDataset, tuple[torch.Tensor, torch.Tensor]]:
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
    y = torch.tensor(digits.target, dtype=torch.int64)
    gen = torch.Generator().manual_seed(0)  # the same split on every rank
    order = torch.randperm(len(x), generator=gen)
    train, test = order[:1500], order[1500:]
    return TensorDataset(x[train], y[train]), (x[test].to(device), y[test].to(device))


def _replica_spread(model: nn.Module) -> float:
    """The largest |w_rank - w_rank0| over all weights and ranks (one all_reduce)."""
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    spread = (flat - reference).abs().max()
    dist.all_reduce(spread, op=dist.ReduceOp.MAX)
    return float(spread)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32, help="per rank (global batch = this x world size)")
    parser.add_argument("--lr", type=float, default=0.02, help="LARS lr (with --lipschitz: the multiplier)")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument(
        "--lipschitz", action="store_true", help="momentum SGD with lr = multiplier / L (distributed LipschitzLR)"
    )
    args = parser.parse_args()

    use_cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")  # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR/PORT
    try:
        train(args, use_cuda)
        # The DDP model, the scheduler's trackers and the optimizer go before the process group: while they outlived
        # it, torch 2.13's gloo aborted one rank at exit in 5 of 12 runs ("terminate called without an active
        # exception"); freed first, 0 of 32 (tests/distributed/test_example.py runs this script).
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


def train(args: argparse.Namespace, use_cuda: bool) -> None:
    """The training loop of :func:`main` (everything it makes is freed when it returns)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(1)  # one core per process

    train_set, (x_test, y_test) = _data(device)
    sampler: DistributedSampler[tuple[torch.Tensor, ...]] = DistributedSampler(
        train_set, num_replicas=world, rank=rank, shuffle=True, seed=0, drop_last=True
    )
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, drop_last=True)

    torch.manual_seed(0)  # DDP broadcasts rank 0's weights anyway; the seed makes runs repeatable
    net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)).to(device)
    model = DistributedDataParallel(net, device_ids=[local_rank] if use_cuda else None)
    groups = lars_param_groups(net, momentum=args.momentum)
    sched = None
    if args.lipschitz:  # the LipschitzLR paper's rule: momentum SGD at lr = multiplier / L of the global batches
        opt: torch.optim.Optimizer = torch.optim.SGD(
            groups, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
        )
        sched = distributed_lipschitz_lr(opt, model, "softmax", weight_decay=args.weight_decay)
    else:
        opt = LARS(groups, lr=args.lr, weight_decay=args.weight_decay)
    loss_fn = nn.CrossEntropyLoss()

    if rank == 0:
        print(f"world {world} ({'nccl' if use_cuda else 'gloo'}), global batch {args.batch_size * world}")
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        model.train()
        total = torch.zeros(2, device=device)  # sum of losses, batches
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()  # DDP averages the gradients across ranks here
            opt.step()
            total += torch.stack([loss.detach(), torch.ones((), device=device)])
        if sched is not None:
            sched.step()  # two all_reduces: the ranks' batch counts, then K_z and m of every global batch
        dist.all_reduce(total)
        model.eval()
        with torch.no_grad():
            accuracy = float((net(x_test).argmax(1) == y_test).float().mean())
        spread = _replica_spread(net)
        if rank == 0:
            lr = opt.param_groups[0]["lr"]
            line = (
                f"epoch {epoch}: train loss {float(total[0] / total[1]):.4f}, test accuracy {accuracy:.3f}, lr {lr:.4g}"
            )
            if sched is None:
                ratios = torch.stack([opt.state[p]["trust_ratio"] for p in groups[0]["params"]])
                line += f", median trust ratio {float(ratios.median()):.3g}"
            else:
                line += f", L {sched.history[-1]['lipschitz']:.4g} (global batch {sched.history[-1]['batch_size']})"
            print(f"{line}, replica spread {spread:.1e}")
    if sched is not None:
        sched.close()


if __name__ == "__main__":
    main()
