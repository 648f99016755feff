"""The HTML report and its figures, on a real tiny search (in-process backend), once as it ran and
once with synthetic robustness metrics and a failed candidate written into its store."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from test_search import tiny_search_dict

from rosearch.config import config_from_dict
from rosearch.results import plots
from rosearch.results.report import write_report
from rosearch.results.stats import architecture_frame, open_store
from rosearch.records.store import CandidateRecord, ResultStore
from rosearch.search import run_search
from rosearch.search_space.genome import CellSpec, Genome

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HOSTILE_ERROR = 'RuntimeError: <script>alert("x")</script> & more'


def _search(root: Path, sst2_dir: Path, teacher_dir: Path) -> Path:
    config = config_from_dict(tiny_search_dict(root, sst2_dir, teacher_dir))
    run_search(config)
    return config.run.run_dir


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory, tiny_sst2_dir, tiny_teacher_dir, single_thread) -> Path:
    return _search(tmp_path_factory.mktemp("plain"), tiny_sst2_dir, tiny_teacher_dir)


@pytest.fixture(scope="module")
def robust_run(tmp_path_factory, tiny_sst2_dir, tiny_teacher_dir, single_thread) -> Path:
    """A real run whose candidates then get proxy robustness (all) and a full attack (best two)."""
    run_dir = _search(tmp_path_factory.mktemp("robust"), tiny_sst2_dir, tiny_teacher_dir)
    with ResultStore(run_dir / "results.sqlite") as store:
        records = [r for r in store.candidates() if r.status == "ok"]
        rng = np.random.default_rng(0)
        best = sorted(records, key=lambda r: -r.fitness)[:2]
        for r in records:
            extra = {"proxy_robust_accuracy": float(rng.uniform(0.1, 0.6))}
            if r in best:
                extra |= {"robust_accuracy": 0.25, "attack_success_rate": 0.6, "attack_queries": 40.0}
            store.record_candidate(dataclasses.replace(r, metrics=r.metrics | extra))
        failed = Genome(32, 16, (CellSpec([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "identity", "output"]),))
        store.record_candidate(CandidateRecord(
            genome_hash=failed.hash(), genome_json=failed.to_json(), generation=1, parents=(), status="failed",
            metrics={}, fitness=None, objectives=(-1e9,), error=HOSTILE_ERROR, attempts=3, seconds=0.1,
            worker="test:1:cpu", finished_at=records[-1].finished_at + 1,
        ))
    return run_dir


def _images(page: str) -> list[bytes]:
    sources = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    return [base64.b64decode(s.split(",", 1)[1]) for s in sources]


def test_report_is_self_contained_and_complete(robust_run: Path, tmp_path: Path) -> None:
    path = write_report(robust_run, tmp_path / "out" / "r.html", top_k=3)
    page = path.read_text(encoding="utf-8")
    for forbidden in ("http://", "https://", 'src="//', "<script", "<link", "@import", "url("):
        assert forbidden not in page, forbidden
    images = _images(page)
    assert len(images) == 2 + 3  # per-generation, trade-off scatter, one cell drawing per top student
    assert page.count("<img") == len(images)
    assert all(image.startswith(PNG_MAGIC) for image in images)
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more" in page  # the failed candidate, escaped
    assert "robustness figure" in page and "proxy_robust_accuracy" in page
    assert "acc under attack" in page  # the attacked candidates' column
    frame = architecture_frame(robust_run)
    for genome_hash in frame["genome_hash"][:3]:
        assert genome_hash in page
    assert frame["genome_hash"].iloc[3] not in page  # only the top 3 are shown in detail
    for section in ("<h2>Run</h2>", "Progress per generation", "Accuracy vs robustness", "<h2>Statistics</h2>",
                    "Top 3 students", "Failed candidates (1)"):
        assert section in page, section


def test_report_of_a_run_without_robustness(plain_run: Path) -> None:
    path = write_report(plain_run)
    assert path == plain_run / "report.html"
    page = path.read_text(encoding="utf-8")
    assert "measured no robustness" in page
    assert "Accuracy vs size" in page and "proxy acc" not in page and "rob. with" not in page
    assert len(_images(page)) == 2 + 5
    assert "Failed candidates" not in page


def test_stats_rank_like_the_search(plain_run: Path) -> None:
    summary = json.loads((plain_run / "summary.json").read_text())
    frame = architecture_frame(plain_run)
    assert list(frame["genome_hash"][: len(summary["top"])]) == [row["hash"] for row in summary["top"]]


def test_generation_series_follow_the_store(plain_run: Path) -> None:
    frame = architecture_frame(plain_run)
    with open_store(plain_run) as store:
        generations = store.generations()
    series = plots.generation_series(generations, frame)
    assert list(series["generation"]) == [g["generation"] for g in generations]
    assert list(series["selection_best"]) == [g["stats"]["best"] for g in generations]
    first = frame.set_index("genome_hash").loc[[h for h in generations[0]["population"] if h in set(frame["genome_hash"])]]
    assert series["accuracy_best"].iloc[0] == first["accuracy"].max()
    assert series["robustness_best"].isna().all()
    fallback = plots.generation_series([], frame)  # no generation records: grouped by proposing generation
    assert list(fallback["generation"]) == sorted(set(frame["generation"]))


def test_pareto_mask() -> None:
    x = np.array([0.9, 0.8, 0.7, 0.85, 0.7])
    y = np.array([0.1, 0.3, 0.5, 0.05, 0.2])
    assert plots.pareto_mask(x, y).tolist() == [True, True, True, False, False]
    cost = np.array([1.0, 2.0, 3.0])
    accuracy = np.array([0.8, 0.9, 0.85])
    assert plots.pareto_mask(cost, accuracy, maximize_x=False).tolist() == [True, True, False]


def test_figures_are_png_and_leave_pyplot_alone() -> None:
    pyplot_loaded = "matplotlib.pyplot" in sys.modules
    figures_before = sys.modules["matplotlib.pyplot"].get_fignums() if pyplot_loaded else None
    cell = CellSpec([[0, 1, 1, 1, 0], [0, 0, 1, 0, 1], [0, 0, 0, 1, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]],
                    ["input", "attn_h2", "conv_k3_relu", "ffn_r2_gelu", "output"])
    png = plots.cell_plot(Genome(32, 16, (cell, cell)), title="two layers")
    assert png.startswith(PNG_MAGIC) and len(png) > 5000
    if pyplot_loaded:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == figures_before
    else:
        assert "matplotlib.pyplot" not in sys.modules



def test_report_names_the_accuracy_floor_when_the_run_has_one(plain_run: Path, tmp_path: Path, tiny_sst2_dir,
                                                               tiny_teacher_dir, single_thread) -> None:
    assert "accuracy floor" not in write_report(plain_run, tmp_path / "none.html").read_text(encoding="utf-8")
    data = tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir)
    data["fitness"] = {**data.get("fitness", {}), "accuracy_floor": 0.3}
    config = config_from_dict(data)
    run_search(config)
    page = write_report(config.run.run_dir, tmp_path / "floored.html").read_text(encoding="utf-8")
    assert "accuracy floor 0.3 (below it a candidate ranks after all above it)" in page
