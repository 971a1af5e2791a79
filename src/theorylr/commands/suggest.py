"""``theorylr suggest``: every theory's learning rate for a registered workload's model, beside a range test.

A thin wrapper over :func:`theorylr.lab.suggest.suggest` (see ``docs/suggest.md``): it builds the workload's model
at its initialisation (seeded like the lab's runs), takes the training set (in the workload's mini-batches) and
prints the table, or the JSON with ``--json``.

Example::

    theorylr suggest --workload iris-softmax --num-samples 5
    theorylr suggest --workload digits-mlp --optimizer adam,lars --target-accuracy 0.05 --range-test --plot s.png
    theorylr suggest --workload mnist-mlp --data-dir ~/data/mnist --examples 5000 --json > suggestion.json
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from theorylr.commands._common import user_path

__all__ = ["add_arguments", "build_inputs", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``theorylr suggest``."""
    parser.add_argument(
        "--workload", default=None, help="a registered workload (default: digits-mlp; see 'theorylr list')"
    )
    parser.add_argument(
        "--total-steps", type=int, default=None, help="T, the optimizer steps planned (default: the workload's budget)"
    )
    parser.add_argument(
        "--optimizer",
        default="all",
        help="sgd, adam, lars, a comma-separated list of them, or all (default: all)",
    )
    parser.add_argument(
        "--target-accuracy",
        type=float,
        default=None,
        help="eps of LARS's Corollary 2.1: the target loss gap f(w) - f(w*) (default: none, no corollary lr)",
    )
    parser.add_argument("--num-samples", type=int, default=10, help="N of Algorithm 2 for K_hat (default 10)")
    parser.add_argument("--range-test", action="store_true", help="also run the LR range test on a copy")
    parser.add_argument("--range-test-steps", type=int, default=50, help="steps of the range test (default 50)")
    parser.add_argument("--json", action="store_true", help="print the suggestion as JSON instead of the table")
    parser.add_argument(
        "--plot", default=None, type=user_path, metavar="PATH", help="write the range-test plot (PNG) here"
    )
    parser.add_argument("--data-dir", default=None, type=user_path, help="folder with the MNIST / CIFAR-10 files")
    parser.add_argument(
        "--examples",
        type=int,
        default=None,
        help="use the first N training examples (default: the workload's grad_norm_samples cap, else all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the model's initialisation and the estimates")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, mps, or auto (cuda if available)")


def _optimizers(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_inputs(
    workload_name: str | None,
    *,
    seed: int = 0,
    data_dir: str | None = None,
    examples: int | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """The model (at its seeded initialisation), loss, batches, default ``T`` and sampler of a workload.

    Returns:
        ``{"workload", "model", "loss_fn", "batches", "total_steps", "sampler"}``.

    Raises:
        ValueError: a bad argument (``device`` not cpu, cuda, cuda:N or auto, or cuda without CUDA), an unknown
            workload, or a workload that needs ``data_dir`` without it; malformed data files.
        FileNotFoundError: ``data_dir`` or one of its files is missing.
    """
    import torch

    from theorylr._validation import SEED_MAX, check_int
    from theorylr.commands._common import check_device
    from theorylr.data import iterate_batches
    from theorylr.lab import DEFAULT_WORKLOAD, get_workload
    from theorylr.models import init_weights

    check_int("seed", seed, min_value=0, max_value=SEED_MAX)
    if examples is not None:
        check_int("examples", examples, min_value=1)
    check_device("device", device)
    workload = get_workload(DEFAULT_WORKLOAD if workload_name is None else workload_name)
    target = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device
    )
    data = workload.load_data(data_dir)
    loss = workload.loss_spec
    dtype = workload.torch_dtype
    n_train = int(data.x_train.shape[0])
    limit = examples if examples is not None else workload.grad_norm_samples
    take = n_train if limit is None else min(limit, n_train)
    x = data.x_train[:take].to(device=target, dtype=dtype)
    y = loss.prepare_targets(data.y_train[:take], dtype).to(target)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = workload.build_model(data, generator=torch.Generator().manual_seed(seed)).to(target)
    scheme = workload.init or "default"

    def sampler(module: torch.nn.Module, generator: torch.Generator) -> None:
        init_weights(module, scheme, generator)

    steps_per_epoch = 1 if workload.batch_size is None else math.ceil(n_train / workload.batch_size)
    return {
        "workload": workload,
        "model": model,
        "loss_fn": loss,
        "batches": list(iterate_batches(x, y, workload.batch_size)),
        "total_steps": workload.epochs * steps_per_epoch,
        "sampler": sampler,
    }


def run(args: argparse.Namespace) -> int:
    """Print the suggestion (table or JSON) and write the plot; returns 0, or 2 on a bad argument, missing data files or
    a plot path that cannot be written. The errors' exit codes come as
    :class:`~theorylr.commands._common.CommandExitError`, which ``theorylr.cli.main`` returns."""
    import dataclasses

    from theorylr._validation import check_int, check_number
    from theorylr.commands._common import check_device, check_output_file, command_errors, os_error_text
    from theorylr.lab.suggest import suggest

    with command_errors("suggest"):
        if args.plot:
            check_output_file("--plot", args.plot)
        check_device("--device", args.device)
        # The flags whose API argument has another name are checked here, so that the error names the flag.
        check_int("--range-test-steps", args.range_test_steps, min_value=2)
        check_int("--num-samples", args.num_samples, min_value=1)
        if args.total_steps is not None:
            check_int("--total-steps", args.total_steps, min_value=1)
        if args.examples is not None:
            check_int("--examples", args.examples, min_value=1)
        if args.target_accuracy is not None:
            check_number("--target-accuracy", args.target_accuracy, min_value=0.0, min_inclusive=False)
        inputs = build_inputs(
            args.workload, seed=args.seed, data_dir=args.data_dir, examples=args.examples, device=args.device
        )
        result = suggest(
            inputs["model"],
            inputs["loss_fn"],
            inputs["batches"],
            total_steps=args.total_steps if args.total_steps is not None else inputs["total_steps"],
            optimizer=_optimizers(args.optimizer),
            target_accuracy=args.target_accuracy,
            num_samples=args.num_samples,
            sampler=inputs["sampler"],
            range_test=args.range_test,
            range_test_options={"num_steps": args.range_test_steps},
            seed=args.seed,
        )
    workload = inputs["workload"]
    result = dataclasses.replace(result, settings={"workload": workload.name, **result.settings})
    print(
        result.to_json() if args.json else f"workload {workload.name}: {workload.description}\n\n{result.table()}",
        end="\n" if args.json else "",
    )
    if args.plot:
        try:
            path = result.plot(args.plot)
        except OSError as exc:
            print(f"theorylr suggest: error: writing the plot: {os_error_text(exc)}", file=sys.stderr)
            return 2
        if not args.json:
            print(f"plot: {path}")
    return 0
