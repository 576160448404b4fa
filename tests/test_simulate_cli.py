"""``qenex-devnet simulate``: the seeded PBFT fault soak (consensus/simulation.py) from the devnet CLI.

A run prints a summary and exits 0; ``--replay SEED`` runs exactly the scenario of one seed, so two
replays print the same thing; a failing scenario prints its seed and the replay command and exits 1.
"""

from __future__ import annotations

import random
import re

import pytest

import consensus.simulation as simulation
from devnet.cli import main

WALL_CLOCK = re.compile(r"\(\d+\.\d s\)")
"""The progress line's elapsed real time, the one part of the output that is not a function of the seed."""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``qenex-devnet simulate ARGV``: its exit status and its output without wall-clock times."""
    capsys.readouterr()
    status = main(["simulate", *argv])
    return status, WALL_CLOCK.sub("(elapsed)", capsys.readouterr().out)


def test_simulate_runs_the_scenarios_and_prints_the_summary(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = run(capsys, "--scenarios", "4", "--seed", "1")
    assert status == 0, out
    assert "4/4 scenarios passed" in out
    assert "4 scenarios (sizes 4,7, master seed 1): no fork, every honest replica moved on" in out
    assert "faults injected: " in out and "highest view reached" in out
    assert "FAILED" not in out


def test_a_replayed_seed_prints_the_same_run(capsys: pytest.CaptureFixture[str]) -> None:
    seed = random.Random(1).getrandbits(63)  # the first scenario of --seed 1
    first = run(capsys, "--replay", str(seed), "--sizes", "4")
    second = run(capsys, "--replay", str(seed), "--sizes", "4")
    assert first[0] == 0 and first == second
    # it is that seed's schedule: the faults the CLI counts are the ones run_scenario applies
    result = simulation.run_scenario(simulation.random_schedule(seed, 4))
    for kind in {f.split(" ")[0].split(":")[0] for f in result.faults}:
        assert f"{kind} x" in first[1]
    other = run(capsys, "--replay", str(seed + 1), "--sizes", "4")
    assert other[0] == 0 and other[1] != first[1]  # the output depends on the seed: equality is not vacuous


def test_a_failing_scenario_prints_its_seed_and_the_replay_command(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    real = simulation.run_scenario
    calls: list[int] = []

    def second_one_forks(schedule: simulation.Schedule) -> simulation.ScenarioResult:
        calls.append(schedule.seed)
        if len(calls) == 2:
            raise simulation.SafetyViolation(f"fork at heights [3] (seed {schedule.seed})")
        return real(schedule)

    monkeypatch.setattr(simulation, "run_scenario", second_one_forks)
    status, out = run(capsys, "--scenarios", "3", "--seed", "5")
    master = random.Random(5)
    seeds = [master.getrandbits(63) for _ in range(3)]
    assert status == 1
    assert calls == seeds[:2], "it stops at the failure"
    assert f"scenario 2 FAILED (n=7, seed {seeds[1]}): SafetyViolation: fork at heights [3]" in out
    assert f"replay it exactly: qenex-devnet simulate --replay {seeds[1]} --sizes 7" in out
    assert "no fork" not in out
