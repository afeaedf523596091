"""The sweep skips complete cells, resumes or restarts unfinished ones and keeps their output."""

from __future__ import annotations

import contextlib
import csv
import json
from pathlib import Path

import pytest

from experiments import sweep


def fake_flwr_run(calls):
    def run(app_dir, run_config, federation_config, superlink, env, echo=True):
        overrides = dict(item.split("=", 1) for item in run_config[0].split(" "))
        outdir = Path(json.loads(overrides["outdir"]))
        rounds = int(overrides["num-server-rounds"])
        calls.append(outdir)
        resumed = json.loads(overrides.get("resume-from", '""'))
        run_dir = Path(resumed) if resumed else outdir / f"run{len(calls)}"
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "rounds.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["round", "env_steps", "episodic_return_mean"])
            w.writerows([i, 100 * i, 10.0] for i in range(1, rounds + 1))
        (run_dir / "model.pt").write_bytes(b"x")
        return str(len(calls)), "finished:completed", str(run_dir)
    return run


@pytest.fixture
def fake_engine(monkeypatch):
    calls: list[Path] = []
    monkeypatch.setattr(sweep, "flwr_run", fake_flwr_run(calls))
    monkeypatch.setattr(sweep, "simulation_superlink", lambda tmp: contextlib.nullcontext({}))
    return calls


ARGS = ["--envs", "CartPole-v1", "--aggregators", "baseline-sum", "lweighted-norm", "--seeds", "1", "2",
        "--set", "num-server-rounds=3"]


def test_sweep_runs_each_cell_once_and_resumes(tmp_path, fake_engine, capsys):
    runs = tmp_path / "runs"
    assert sweep.main(["--runs-dir", str(runs), *ARGS]) == 0
    assert len(fake_engine) == 4
    out = capsys.readouterr().out
    assert "[4/4 done]" in out and "ETA" in out
    cell = runs / "CartPole-v1" / "lweighted-norm" / "small" / "seed1"
    info = json.loads((cell / "cell.json").read_text())
    assert info["config"]["aggregator"] == "lweighted" and info["config"]["normalize-weights"] is True
    # A second invocation finds everything complete.
    assert sweep.main(["--runs-dir", str(runs), *ARGS]) == 0
    assert len(fake_engine) == 4
    # A cell killed mid-run (no cell.json) is redone; its partial output is kept aside.
    (cell / "cell.json").unlink()
    assert sweep.main(["--runs-dir", str(runs), *ARGS]) == 0
    assert len(fake_engine) == 5
    assert sweep.is_complete(cell)
    kept = list((cell / "incomplete").glob("*/run*/rounds.csv"))
    assert len(kept) == 1


def test_truncated_results_are_not_complete(tmp_path, fake_engine):
    runs = tmp_path / "runs"
    sweep.main(["--runs-dir", str(runs), *ARGS])
    cell = runs / "CartPole-v1" / "baseline-sum" / "small" / "seed2"
    rounds = next(cell.glob("run*/rounds.csv"))
    rounds.write_text("\n".join(rounds.read_text().splitlines()[:-1]) + "\n")
    assert not sweep.is_complete(cell)


def test_bad_override_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        sweep.main(["--runs-dir", str(tmp_path), "--set", "num-server-rounds=0"])
    assert "num-server-rounds = 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sweep.main(["--runs-dir", str(tmp_path), "--set", "aggregator=lweighted"])
    assert "--set" in capsys.readouterr().err


def test_archived_cells_are_skipped(tmp_path, fake_engine, capsys):
    from experiments.report import write_report

    runs = tmp_path / "runs"
    assert sweep.main(["--runs-dir", str(runs), *ARGS]) == 0
    write_report(runs, tmp_path / "results")
    # A fresh machine: the runs dir is gone, the committed archive (no models) remains.
    fresh = tmp_path / "fresh"
    more = [*ARGS[:-2], "3", *ARGS[-2:]]
    assert sweep.main(["--runs-dir", str(fresh), "--archive", str(tmp_path / "results" / "cells"), *more]) == 0
    assert "6 cells, 4 already complete, 2 to run" in capsys.readouterr().out
    assert len(fake_engine) == 6 and all(p.name == "seed3" for p in fake_engine[4:])
    # Before the first report there is no archive yet: said, not fatal.
    assert sweep.main(["--runs-dir", str(tmp_path / "other"), "--archive", str(tmp_path / "nowhere"), *ARGS]) == 0
    assert "nowhere does not exist (yet)" in capsys.readouterr().out and len(fake_engine) == 10


def test_cell_complete_with_another_config_stops_the_sweep(tmp_path, fake_engine, capsys):
    runs = tmp_path / "runs"
    assert sweep.main(["--runs-dir", str(runs), *ARGS]) == 0
    capsys.readouterr()
    longer = [*ARGS[:-1], "num-server-rounds=5"]
    assert sweep.main(["--runs-dir", str(runs), *longer]) == 2
    err = capsys.readouterr().err
    assert "num-server-rounds = 3 there, 5 asked" in err
    assert err.count("num-server-rounds") == 4 and "lweighted-norm" in err
    # Nothing ran and the shorter runs are untouched.
    assert len(fake_engine) == 4
    assert all(sweep.is_complete(runs / "CartPole-v1" / v / "small" / s)
               for v in ("baseline-sum", "lweighted-norm") for s in ("seed1", "seed2"))
    # The same holds for archived cells, and the config they ran with is still accepted.
    from experiments.report import write_report
    write_report(runs, tmp_path / "results")
    archive = ["--archive", str(tmp_path / "results" / "cells")]
    assert sweep.main(["--runs-dir", str(tmp_path / "fresh"), *archive, *longer]) == 2
    assert sweep.main(["--runs-dir", str(tmp_path / "fresh"), *archive, *ARGS]) == 0
    assert len(fake_engine) == 4


def test_an_unfinished_cell_with_a_checkpoint_is_resumed_not_restarted(tmp_path, fake_engine):
    runs = tmp_path / "runs"
    sweep.main(["--runs-dir", str(runs), *ARGS])
    cell = runs / "CartPole-v1" / "baseline-sum" / "small" / "seed1"
    (cell / "cell.json").unlink()
    (run_dir,) = cell.glob("run*")
    config = sweep.Cell("CartPole-v1", "baseline-sum", "small", 1).run_config({"num-server-rounds": 3})
    full = sweep.FedRLConfig.from_run_config({**config, "outdir": str(cell)}).to_run_config()
    (run_dir / "config.json").write_text(json.dumps({"config": full}))
    (run_dir / "checkpoint.pt").write_bytes(b"x")
    sweep.main(["--runs-dir", str(runs), *ARGS])
    assert fake_engine[-1] == cell and not (cell / "incomplete").exists()
    assert sweep.is_complete(cell) and json.loads((cell / "cell.json").read_text())["run_dir"] == run_dir.name
    # A checkpoint of another config is not resumed: the cell starts again and the old run is kept aside.
    (cell / "cell.json").unlink()
    (run_dir / "config.json").write_text(json.dumps({"config": {**full, "seed": 9}}))
    sweep.main(["--runs-dir", str(runs), *ARGS])
    assert len(list((cell / "incomplete").glob("*/run*/checkpoint.pt"))) == 1
