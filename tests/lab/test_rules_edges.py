"""The rule registry at the edges: options keyed NAME@LR, however the LR is written."""

from __future__ import annotations

import dataclasses

import pytest

from theorylr.lab import WORKLOADS, get_workload, register_workload, resolve_rule


@pytest.mark.parametrize(("key", "canonical"), [("lars@1e-1", "lars@0.1"), ("adam@1e-3", "adam@0.001")])
def test_rule_options_for_a_name_at_lr_spec_apply_however_the_lr_is_spelled(key: str, canonical: str) -> None:
    # docs/lab.md: "options given for NAME@LR itself come last", with `adam@1e-3` as the documented spelling.
    # resolve_rule() names the variant with f"{lr:g}" ("adam@0.001"), and Workload.options_for() looks the options
    # up under that name only, so options keyed by the spelling the user wrote were silently dropped while
    # register_workload() accepted the key as valid.
    workload = dataclasses.replace(
        get_workload("wine-mlp"), name="wine-mlp-at-lr-edge", rule_options={key: {"momentum": 0.5}}
    )
    try:
        register_workload(workload, replace=True)
    except ValueError:
        return  # refusing a key that would never match is an acceptable fix too
    finally:
        WORKLOADS.pop(workload.name, None)
    rule = resolve_rule(key)
    assert rule.name == canonical
    assert workload.options_for(rule.name).get("momentum") == 0.5
