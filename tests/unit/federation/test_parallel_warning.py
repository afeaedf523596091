"""The warning for clients that take turns on a machine that could run them side by side."""

from __future__ import annotations

from types import SimpleNamespace

from fedrl.federation.sync import serial_clients_warning


def rollouts(*compute_s: float) -> list:
    return [SimpleNamespace(compute_s=c) for c in compute_s]


def test_clients_that_took_turns_get_the_exact_federation_config():
    warning = serial_clients_warning(rollouts(0.35, 0.36), seconds=0.74, cpus=2)
    assert warning is not None
    assert "--federation-config 'num-supernodes=2 client-resources-num-cpus=1'" in warning
    assert "0.71 s of compute in a 0.74 s phase" in warning


def test_the_remedy_names_the_whole_federation_when_a_round_samples_part_of_it():
    warning = serial_clients_warning(rollouts(0.35, 0.36), seconds=0.74, cpus=2, supernodes=20)
    assert "'num-supernodes=20 client-resources-num-cpus=1'" in warning


def test_clients_that_overlapped_are_not_warned_about():
    assert serial_clients_warning(rollouts(0.35, 0.36), seconds=0.38, cpus=2) is None


def test_one_client_or_one_cpu_cannot_run_side_by_side():
    assert serial_clients_warning(rollouts(0.35), seconds=0.36, cpus=2) is None
    assert serial_clients_warning(rollouts(0.35, 0.35), seconds=0.71, cpus=1) is None
    assert serial_clients_warning(rollouts(0.35, 0.35), seconds=0.71, cpus=None) is None
