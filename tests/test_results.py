"""`make results`: runs a row on several seeds as its command runs, and publishes the table."""

import json

import numpy as np
from conftest import TINY

from stoix import results


def test_a_row_on_two_seeds_becomes_a_table_line_with_its_iqm(tmp_path, monkeypatch):
    tiny = tuple(o for o in TINY if not o.startswith("logger."))
    row = results.Row("ff_ppo", "stoix/systems/ppo/anakin/ff_ppo.py", tiny)
    monkeypatch.setattr(results, "ROWS", [row])
    docs = tmp_path / "docs"
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n{results.README_START}\nold table\n{results.README_END}\nafter\n")
    code = results.main(
        ["--seeds", "2", "--runs", str(tmp_path / "runs"), "--docs", str(docs), "--readme", str(readme)]
    )
    assert code == 0
    summary = json.loads((docs / "results.json").read_text())["ff_ppo"]
    seeds = [summary["seeds"][s] for s in ("0", "1")]
    assert len(set(seeds)) == 2 and all(0 < s <= 500 for s in seeds)  # two different runs
    # The IQM of two numbers is their mean; the interval holds it.
    assert np.isclose(summary["iqm"], np.mean(seeds), atol=0.01)
    assert summary["ci"][0] <= summary["iqm"] <= summary["ci"][1]
    table = (docs / "results.md").read_text()
    line = next(x for x in table.splitlines() if x.startswith("| `ff_ppo`"))
    assert f"{summary['iqm']:.1f} [" in line and "CartPole-v1" in line and row.command() in line
    assert (docs / "images" / "aggregate.png").stat().st_size > 1000
    # The README's block is rewritten from the same numbers; what surrounds it stays.
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# Title\n") and text.endswith("after\n")
    readme_line = next(x for x in text.splitlines() if x.startswith("| `ff_ppo`"))
    assert f"{summary['iqm']:.1f} [{summary['ci'][0]:.1f}, {summary['ci'][1]:.1f}]" in readme_line
    assert f"`{row.command()}`" in readme_line


def test_unknown_row_is_one_line(capsys):
    assert results.main(["--only", "ff_nothing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ff_nothing" in err[0] and "ff_ppo" in err[0]


def test_no_plot_refreshes_the_table_without_images(tmp_path, monkeypatch):
    row = results.Row("ff_ppo", "stoix/systems/ppo/anakin/ff_ppo.py")
    monkeypatch.setattr(results, "ROWS", [row])

    def fake_run(row, seed, runs):  # the table's arithmetic only; the runs are tested above
        return results.Outcome(row, seed, 100.0 + seed, 1000, "CartPole-v1", 1.0, "2026-11-27")

    monkeypatch.setattr(results, "run_one", fake_run)
    docs, readme = tmp_path / "docs", tmp_path / "README.md"
    readme.write_text(f"{results.README_START}\n{results.README_END}\n")
    argv = ["--seeds", "3", "--runs", str(tmp_path / "runs"), "--docs", str(docs), "--readme", str(readme)]
    assert results.main([*argv, "--no-plot"]) == 0
    summary = json.loads((docs / "results.json").read_text())["ff_ppo"]
    assert [summary["seeds"][s] for s in ("0", "1", "2")] == [100.0, 101.0, 102.0]
    assert "| `ff_ppo`" in (docs / "results.md").read_text()
    assert not (docs / "images").exists()
