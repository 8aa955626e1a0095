"""`senet ablate`: the paper's ablation grids (Tables 10-16), run end to end on a tiny
ImageFolder tree, reused when finished, resumed when interrupted, never silently overwritten."""

import argparse
import csv
import json
import statistics

import pytest
import torch

from senet.analysis.ablate import STUDIES, baseline_model, plan_study, se_stage_numbers, study_cells
from senet.analysis.ablate_report import mean_std
from senet.analysis.paired import paired_difference, t_quantile_975
from senet.analysis.paper_ablations import paper_ablation, paper_ablations
from senet.cli import ablate_cmd
from senet.complexity import complexity
from senet.errors import ConfigError, SenetError
from senet.models import create_model
from senet.paper import paper_rows
from senet.train import Trainer
from tests.conftest import make_tree

TINY = ["--set", "data.dataset=imagefolder", "--set", "data.crop=16", "--set", "data.pad=2",
        "--set", "data.batch_size=32", "--set", "data.eval_batch_size=64", "--set", "run.max_steps=4",
        "--epochs", "1", "--no-progress"]


def _ablate(*argv):
    parser = argparse.ArgumentParser()
    ablate_cmd.add_arguments(parser)
    return ablate_cmd.run(parser.parse_args([str(a) for a in argv]))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    # 4 classes x (64 train + 16 test) = 320 images of 16x16
    return make_tree(tmp_path_factory.mktemp("ablate") / "tree", train=64, test=16)


@pytest.fixture(scope="module")
def gate_study(tree, tmp_path_factory):
    """The gate study (Table 12: sigmoid, tanh, ReLU), two seeds per cell, run once."""
    out = tmp_path_factory.mktemp("gate") / "study"
    assert _ablate("--study", "gate", "--seeds", 2, "--data", tree, "--out", out, *TINY) == 0
    return out


# ------------------------------------------------------------------ the grids
def test_each_study_is_the_papers_grid():
    assert list(STUDIES) == ["reduction", "squeeze", "gate", "stages", "placement", "nosqueeze", "se"]
    grid = {s: {c.id: c.changes for c in study_cells(s)} for s in STUDIES}
    assert grid["reduction"] == {"r2": {"reduction": 2}, "r4": {"reduction": 4}, "r8": {"reduction": 8},
                                 "r16": {"reduction": 16}, "r32": {"reduction": 32}, "none": None}
    assert grid["squeeze"] == {"avg": {"squeeze": "avg"}, "max": {"squeeze": "max"}}
    assert grid["gate"] == {"sigmoid": {"gate": "sigmoid"}, "tanh": {"gate": "tanh"}, "relu": {"gate": "relu"}}
    assert grid["stages"] == {"stage2": {"se_stages": [2]}, "stage3": {"se_stages": [3]},
                              "stage4": {"se_stages": [4]}, "all": {"se_stages": None}, "none": None}
    assert grid["placement"] == {p: {"placement": p} for p in ("standard", "pre", "post", "identity", "conv3x3")}
    assert grid["nosqueeze"] == {"nosqueeze": {"squeeze": "none"}, "se": {"squeeze": "avg"}, "none": None}
    assert grid["se"] == {"se": {}, "none": None}
    assert [c.label for c in study_cells("placement")] == ["SE", "SE-PRE", "SE-POST", "SE-Identity", "SE_3x3"]


def test_plans_for_the_default_recipe_build_and_follow_r():
    """cifar_se_resnet20: no-SE cell is cifar_resnet20, r = 32 (16 channels / 32 = 0.5) keeps
    a hidden width of 1 instead of failing, and params fall as r grows."""
    plan = plan_study("reduction", seeds=3)
    cells = {c.id: c for c in plan.cells}
    assert cells["none"].model == "cifar_resnet20" and cells["none"].kwargs == {}
    assert cells["r32"].kwargs == {"reduction": 32, "se_divisor": 1} and "se_divisor=1" in cells["r32"].note
    assert all(cells[f"r{r}"].kwargs == {"reduction": r} for r in (2, 4, 8, 16))
    params = []
    for c in plan.cells:
        with torch.device("meta"):
            params.append(complexity(create_model(c.model, **c.kwargs), (3, 32, 32)).params)
    assert params == sorted(params, reverse=True) and len(set(params)) == 6
    # seed by seed: a study stopped part way holds complete pairs
    assert [r.folder for r in plan.runs[:7]] == [f"{c}/seed0" for c in ("r2", "r4", "r8", "r16", "r32", "none")] + ["r2/seed1"]
    assert [r.config.run.seed for r in plan.runs[::6]] == [0, 1, 2]
    assert plan.runs[-1].config.model.name == "cifar_resnet20"

    assert se_stage_numbers("cifar_se_resnet20") == [2, 3, 4]
    assert se_stage_numbers("se_resnet50") == [2, 3, 4, 5]
    stages = plan_study("stages", overrides=["model.kwargs.se_stages=[3]"])
    assert [c.id for c in stages.cells] == ["stage2", "stage3", "stage4", "all", "none"]
    assert {c.id: c.kwargs.get("se_stages") for c in stages.cells} == {
        "stage2": [2], "stage3": [3], "stage4": [4], "all": None, "none": None}


def test_baseline_models_are_found_in_the_registry():
    assert baseline_model("cifar_se_resnet20") == "cifar_resnet20"
    assert baseline_model("se_resnet50") == "resnet50"
    assert baseline_model("se_resnext50_32x4d") == "resnext50_32x4d"
    assert baseline_model("cifar_se_preact_resnet164") == "cifar_preact_resnet164"
    assert baseline_model("se_shake_shake26_2x96d") == "shake_shake26_2x96d"
    with pytest.raises(ConfigError, match="has no registered baseline without SE"):
        baseline_model("se_resnext26_32x4d")
    with pytest.raises(ConfigError, match="has no registered baseline"):
        plan_study("nosqueeze", overrides=["model.name=senet154"])
    assert len(plan_study("gate", overrides=["model.name=senet154"]).cells) == 3  # no baseline needed


def test_bad_studies_recipes_and_cells_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown study 'ratio'; studies: reduction, squeeze, gate, stages, "
                                          "placement, nosqueeze, se"):
        _ablate("--study", "ratio", "--dry-run")
    with pytest.raises(ConfigError, match="use its SE variant 'cifar_se_resnet110'"):
        _ablate("--study", "gate", "--recipe", "cifar10/resnet110", "--dry-run")
    with pytest.raises(ConfigError, match="unknown cell.*its cells: sigmoid, tanh, relu"):
        _ablate("--study", "gate", "--cells", "softmax", "--dry-run")
    with pytest.raises(ConfigError, match="--seeds must be >= 1"):
        plan_study("gate", None, [], seeds=0)
    with pytest.raises(SystemExit):  # the command line refuses it before planning (argparse names --seeds)
        _ablate("--study", "gate", "--seeds", 0, "--dry-run")


def test_ablate_under_torchrun_is_refused_before_writing_anything(tmp_path, monkeypatch):
    # every rank would write study.json and the report: refuse rather than race
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SenetError, match="not distributed: start it with python/senet, not torchrun"):
        _ablate("--study", "gate", "--out", tmp_path / "study")
    assert not (tmp_path / "study").exists()


def test_paper_numbers_are_the_papers():
    """Every CIFAR cell has the paper's row, with the figures of SENET.md (Tables 10-16),
    and the params / GFLOPs agree with senet/paper/complexity.csv where both give them."""
    for study in STUDIES:
        for cell in study_cells(study):
            assert paper_ablation(study, cell.id) is not None, (study, cell.id)
    assert paper_ablation("stages", "stage5") is None
    r = {c: paper_ablation("reduction", c) for c in ("r2", "r4", "r8", "r16", "r32", "none")}
    assert [row.top1 for row in r.values()] == [22.29, 22.25, 22.26, 22.28, 22.72, 23.30]
    assert [row.params_m for row in r.values()] == [45.7, 35.7, 30.7, 28.1, 26.9, 25.6]
    assert (paper_ablation("gate", "relu").top1, paper_ablation("gate", "relu").top5) == (23.47, 6.98)
    assert paper_ablation("squeeze", "max").error_text() == "22.57 (6.09)"
    assert paper_ablation("placement", "identity").top1 == 22.20
    ns = paper_ablation("nosqueeze", "nosqueeze")
    assert (ns.top1, ns.gflops, ns.params_m) == (22.93, 4.27, 28.1)
    complexity_rows = {(row.table, row.label): row for row in paper_rows()}
    checked = 0
    for row in paper_ablations():
        other = complexity_rows.get((row.table, row.label)) or complexity_rows.get((row.table, f"SE {row.label}"))
        if other is not None:
            assert (row.params_m, row.gflops) == (other.params_m, other.gflops or row.gflops), row
            checked += 1
    assert checked >= 8


def test_mean_and_sample_std():
    assert mean_std([]) == (None, None)
    assert mean_std([3.0]) == (3.0, None)
    mean, std = mean_std([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3) and std == pytest.approx(statistics.stdev([1.0, 2.0, 4.0]))


# ------------------------------------------------------------------ running
def test_gate_study_writes_table_plot_and_results(gate_study, capsys):
    out = gate_study
    for cell in ("sigmoid", "tanh", "relu"):
        for seed in (0, 1):
            assert (out / cell / f"seed{seed}" / "summary.json").is_file()
    study = json.loads((out / "study.json").read_text())
    assert study["study"] == "gate" and study["seeds"] == [0, 1] and len(study["runs"]) == 6
    assert [c["kwargs"] for c in study["cells"]] == [{"gate": "sigmoid"}, {"gate": "tanh"}, {"gate": "relu"}]

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["cell"] for r in rows] == ["sigmoid", "tanh", "relu"]
    for row in rows:
        summaries = [json.loads((out / row["cell"] / f"seed{s}" / "summary.json").read_text()) for s in (0, 1)]
        errs = [100 * s["test_top1_err"] for s in summaries]
        assert row["n_seeds"] == "2"
        assert float(row["top1_err_mean"]) == pytest.approx(statistics.mean(errs), abs=1e-4)
        assert float(row["top1_err_std"]) == pytest.approx(statistics.stdev(errs), abs=1e-4)
        assert int(row["params"]) == summaries[0]["params"] and int(row["flops"]) == summaries[0]["flops"]
        assert json.loads(row["kwargs"]) == {"gate": row["cell"]}
    assert rows[2]["paper_top1"] == "23.4700" and rows[2]["paper_top5"] == "6.9800"
    results = json.loads((out / "results.json").read_text())
    assert results["study"] == "gate" and [c["cell"] for c in results["cells"]] == ["sigmoid", "tanh", "relu"]

    table = (out / "table.md").read_text()
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| cell | top-1 err % | top-5 err % | seeds | params | MFLOPs | paper top-1 (top-5) %")
    relu = lines[-1]
    assert relu.startswith("| ReLU | ") and "23.47 (6.98) (T12)" in relu and " | 2 | " in relu
    assert f"{float(rows[2]['top1_err_mean']):.2f} ± {float(rows[2]['top1_err_std']):.2f}" in relu
    assert "not the absolute numbers" in table
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerunning_a_finished_study_trains_nothing(gate_study, tree, monkeypatch, capsys):
    def no_training(self):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(Trainer, "fit", no_training)
    summaries = sorted(gate_study.glob("*/seed*/summary.json"))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in summaries}
    results = (gate_study / "results.csv").read_text()
    capsys.readouterr()
    # --device only says where to run: it does not make a finished cell different
    assert _ablate("--study", "gate", "--seeds", 2, "--data", tree, "--out", gate_study, "--device", "cpu",
                   *TINY) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished earlier") == 6 and "[6/6] ReLU (relu) seed 1: finished earlier" in printed
    assert "| ReLU |" in printed  # the table is printed at the end
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in summaries} == before
    assert (gate_study / "results.csv").read_text() == results


def test_a_changed_config_or_another_study_is_refused(gate_study, tree):
    before = {p: p.read_bytes() for p in gate_study.rglob("*") if p.is_file()}
    with pytest.raises(SenetError, match=r"sigmoid/seed0 holds a run with a different configuration.*"
                                         r"optim.lr: 0.2 in the folder, 0.05 now"):
        _ablate("--study", "gate", "--seeds", 2, "--data", tree, "--out", gate_study, *TINY,
                "--set", "optim.lr=0.05")
    with pytest.raises(SenetError, match=r"schedule.epochs: 1 in the folder, 2 now"):
        _ablate("--study", "gate", "--data", tree, "--out", gate_study, *TINY, "--epochs", "2")
    with pytest.raises(SenetError, match="holds the 'gate' study of 'cifar_se_resnet20'"):
        _ablate("--study", "squeeze", "--data", tree, "--out", gate_study, *TINY)
    assert {p: p.read_bytes() for p in gate_study.rglob("*") if p.is_file()} == before


def test_an_interrupted_cell_is_resumed(tree, tmp_path, monkeypatch, capsys):
    """Ctrl-C in the middle of r = 32's run; running the command again continues that run from
    its checkpoint and then trains the no-SE cell."""
    out = tmp_path / "study"
    args = ["--study", "reduction", "--cells", "r32,none", "--data", tree, "--out", out, *TINY,
            "--set", "run.checkpoint_every=1"]

    def stop_at_step_2(self):
        if self.global_step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_after_step", stop_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        _ablate(*args)
    run = out / "r32" / "seed0"
    assert (run / "checkpoint.pt").is_file() and not (run / "summary.json").exists()
    assert "interrupted" in (run / "events.log").read_text()
    assert not (out / "none").exists()
    assert "run the same command again" in capsys.readouterr().out

    monkeypatch.undo()
    assert _ablate(*args) == 0
    printed = capsys.readouterr().out
    assert "[1/2] r = 32 (r32) seed 0: resuming" in printed and "[2/2] no SE (none) seed 0: training" in printed
    assert "resumed at epoch 0 step 2" in (run / "events.log").read_text()
    assert json.loads((run / "summary.json").read_text())["steps"] == 4
    summary_none = json.loads((out / "none" / "seed0" / "summary.json").read_text())
    assert summary_none["model"] == "cifar_resnet20"
    table = (out / "table.md").read_text()
    r32 = next(line for line in table.splitlines() if line.startswith("| r = 32 |"))
    assert " ± - |" in r32 and "se_divisor=1" in r32 and "22.72 (T10)" in r32
    none = next(line for line in table.splitlines() if line.startswith("| no SE |"))
    assert f"| {summary_none['params']:,} |" in none
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_se_study_reports_the_paired_difference_and_learning_curves(tree, tmp_path, capsys):
    """SE against its baseline, two seeds, two evaluated epochs: the table's difference is the
    mean of the per-seed differences of the runs' own summaries, with a t interval around it;
    curves.csv holds every evaluated epoch of every cell."""
    out = tmp_path / "se"
    args = [*TINY[:TINY.index("--epochs")], "--epochs", "2", "--no-progress"]
    args[args.index("run.max_steps=4")] = "run.max_steps=0"  # two whole epochs
    assert _ablate("--study", "se", "--seeds", 2, "--data", tree, "--out", out, *args) == 0
    summaries = {(cell, s): json.loads((out / cell / f"seed{s}" / "summary.json").read_text())
                 for cell in ("se", "none") for s in (0, 1)}
    assert summaries[("none", 0)]["model"] == "cifar_resnet20" and summaries[("se", 0)]["model"] == "cifar_se_resnet20"
    diffs = [100 * (summaries[("se", s)]["test_top1_err"] - summaries[("none", s)]["test_top1_err"]) for s in (0, 1)]
    row = next(r for r in csv.DictReader((out / "results.csv").open()) if r["cell"] == "se")
    assert float(row["top1_diff_vs_none"]) == pytest.approx(statistics.mean(diffs), abs=1e-4)
    assert row["diff_pairs"] == "2"
    low, high = float(row["top1_diff_ci_low"]), float(row["top1_diff_ci_high"])
    assert low <= float(row["top1_diff_vs_none"]) <= high
    assert (high - low) / 2 == pytest.approx(t_quantile_975(1) * statistics.stdev(diffs) / 2 ** 0.5, abs=1e-3)
    table = (out / "table.md").read_text()
    assert "| Δ top-1 vs no SE |" in table and "23.29 (6.62) (T2)" in table
    curves = list(csv.DictReader((out / "curves.csv").open()))
    assert [(r["cell"], float(r["epoch"]), r["n_seeds"]) for r in curves] == [
        ("se", 1.0, "2"), ("se", 2.0, "2"), ("none", 1.0, "2"), ("none", 2.0, "2")]
    last = [100 * summaries[("none", s)]["test_top1_err"] for s in (0, 1)]
    assert float(curves[-1]["test_top1_err_mean"]) == pytest.approx(statistics.mean(last), abs=1e-4)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "curves.png" in capsys.readouterr().out


def test_paired_difference_pairs_by_seed():
    a, b = {0: 10.0, 1: 12.0, 2: 11.0, 7: 50.0}, {0: 11.0, 1: 12.6, 2: 12.2}
    d = paired_difference(a, b)
    diffs = [a[s] - b[s] for s in (0, 1, 2)]
    assert d.seeds == (0, 1, 2) and d.mean == pytest.approx(statistics.mean(diffs))
    assert d.std == pytest.approx(statistics.stdev(diffs))
    assert d.ci_low < d.mean < d.ci_high and d.ci_high < 0  # all three seeds agree
    one = paired_difference({0: 1.0}, {0: 3.0})
    assert one.mean == -2.0 and one.ci_low is None and "no interval" in one.text()
    assert paired_difference({0: 1.0}, {1: 1.0}) is None
    # t quantiles fall towards the normal one as the degrees of freedom grow
    qs = [t_quantile_975(df) for df in (1, 2, 5, 30, 31, 100, 10**6)]
    assert qs == sorted(qs, reverse=True) and qs[-1] == pytest.approx(1.96, abs=1e-3)
