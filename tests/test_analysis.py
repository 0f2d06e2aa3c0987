"""Result tables, the exported numbers and the charts' downsampling."""

import csv

from synthgap_tui import analysis
from synthgap_tui.store import RunStore
from tui_fixtures import build_workspace


def test_downsampling_keeps_a_loss_spike_and_the_point_budget():
    xs = list(range(10_000))
    ys = [1.0] * 10_000
    ys[6_543] = 9.5  # one bad step
    ys[200] = 0.1
    dx, dy = analysis.downsample(xs, ys, 80)
    assert len(dx) <= 80 and 9.5 in dy and 0.1 in dy
    assert dx == sorted(dx) and dx[dy.index(9.5)] == 6_543
    assert analysis.downsample(xs[:50], ys[:50], 80) == (xs[:50], ys[:50])


def test_results_csv_has_numbers_mean_and_std_columns_and_one_column_per_swept_key(tmp_path):
    ws = build_workspace(tmp_path / "ws")
    runs = analysis.load_runs(ws, RunStore(ws).list(experiment="layer-freeze"))
    written = analysis.export(runs, tmp_path / "out", "layer-freeze")
    assert tmp_path / "out" / "results.csv" in written
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert {"run", "kind", "experiment", "freeze_layers", "top1_mean", "top1_std", "top5_mean",
            "train_loss_mean"} <= set(rows[0])
    row = next(r for r in rows if r["run"] == "freeze@freeze_layers=8")
    assert row["freeze_layers"] == "8" and abs(float(row["top1_mean"]) - 41.0) < 1e-9
    assert float(row["top1_std"]) > 0
    real = next(r for r in rows if r["run"] == "real-only")
    assert real["freeze_layers"] == "" and abs(float(real["top1_mean"]) - 86.46) < 1e-9


def test_the_log_fit_is_a_least_squares_line_in_ln_x():
    import math

    xs = [1.0, 0.5, 0.25, 0.125]
    a, b = analysis.log_fit(xs, [80 + 3 * math.log(x) for x in xs])
    assert abs(a - 3) < 1e-9 and abs(b - 80) < 1e-9
    assert analysis.log_fit([1.0], [5.0]) is None


def test_the_data_reduction_fit_is_in_the_paper_s_convention(tmp_path):
    """Mind the Gap, Fig. 3: f(x) = -2.23 log(x) + 85.61 with x the reduction factor."""
    import math

    runs = [analysis.RunData({"id": f"{i:010d}", "name": f"reduced@fraction={f}", "kind": "train",
                              "summary": {"top1_mean": 85.61 - 2.23 * math.log(1 / f), "top1_std": 0.1}},
                             {"sweep": {"fraction": f}}) for i, f in enumerate([1.0, 0.5, 0.25, 0.125, 0.0625])]
    fit = analysis.find_sweep(runs).fits["reduced"]
    assert abs(fit.a + 2.23) < 1e-9 and abs(fit.b - 85.61) < 1e-9  # the paper's sign: accuracy falls with x
    assert str(fit) == "top-1 = -2.23·ln(x) + 85.61, x = the reduction factor 1/fraction"
    assert abs(fit.at(0.125) - (85.61 - 2.23 * math.log(8))) < 1e-9


def _adaptation_runs():
    """The Unmet Promise, Fig. 2 shaped runs: two arms x 2 sizes x 3 seeds, an off-the-shelf model."""
    runs, i = [], 0
    for arm, base_acc in (("adapt-retrieved", 60.0), ("adapt-synthetic", 50.0)):
        for fraction, images in ((0.5, 100), (1.0, 200)):
            for seed in (0, 1, 2):
                summary = {"top1_mean": base_acc + fraction * 10 + seed, "top1_std": 0.0, "train_images": images,
                           "linear_probe_top1": base_acc + 20 + seed * 2}
                runs.append(analysis.RunData({"id": f"{i:010d}", "name": f"{arm}[fraction={fraction},seed={seed}]",
                                              "kind": "train", "summary": summary},
                                             {"sweep": {"fraction": fraction, "seed": seed}}))
                i += 1
    runs.append(analysis.RunData({"id": f"{i:010d}", "name": "off-the-shelf", "kind": "train",
                                  "summary": {"top1_mean": 40.0, "top1_std": 0.0, "train_images": 0,
                                              "linear_probe_top1": 70.0}}, {}))
    return runs


def test_seeds_aggregate_to_mean_and_std_against_the_number_of_adaptation_images():
    runs = _adaptation_runs()
    assert analysis.sweep_keys(runs) == ["train_images", "fraction"]  # never the seed
    zero_shot = analysis.find_sweep(runs)
    assert zero_shot.key == "train_images" and zero_shot.baselines == {"off-the-shelf": 40.0}
    (x, mean, std), _ = zero_shot.series["adapt-retrieved"]
    assert (x, mean, std) == (100.0, 66.0, 1.0)  # 65, 66, 67 over the seeds
    probe = analysis.find_sweep(runs, metric="linear_probe_top1")
    assert probe.series["adapt-synthetic"][1] == (200.0, 72.0, 2.0) and probe.baselines == {"off-the-shelf": 70.0}
    by_fraction = analysis.find_sweep(runs, "fraction")
    assert [p[0] for p in by_fraction.series["adapt-retrieved"]] == [0.5, 1.0]
    header, rows = analysis.sweep_table([zero_shot, probe])
    assert header == ["Series", "adaptation images", "top-1 accuracy (%)", "linear-probe top-1 (%)"]
    assert ["adapt-retrieved", "100", "66.0 ± 1.0", "82.0 ± 2.0"] in rows
    assert ["off-the-shelf", "", "40.0", "70.0"] in rows


def test_export_draws_figure_2_with_both_panels(tmp_path):
    written = analysis.export(_adaptation_runs(), tmp_path, "unmet promise")
    assert {"sweep.png", "sweep.svg", "sweep.csv", "sweep.md"} <= {p.name for p in written}
    svg = (tmp_path / "sweep.svg").read_text()
    assert "adaptation images" in svg and "linear-probe top-1" in svg and "off-the-shelf" in svg


def test_figures_keep_many_series_apart_and_their_legends_off_the_data():
    from synthgap_tui import analysis

    sweep = analysis.Sweep("fraction", {f"s{i}": [(0.5, 50.0 + i, 1.0), (1.0, 60.0 + i, 1.0)] for i in range(12)},
                           {"real-only": 80.0, "synth-only": 60.0}, {}, "top1")
    fig = analysis.sweep_figure([sweep], "t")
    ax = fig.axes[0]
    styles = {(c.lines[0].get_color(), c.lines[0].get_marker(), c.lines[0].get_linestyle()) for c in ax.containers}
    assert len(styles) == 12  # past ten colours, the marker and line style change
    baselines = [line for line in ax.lines if line.get_label().startswith(("real-only", "synth-only"))]
    assert len({str(line.get_linestyle()) + line.get_color() for line in baselines}) == 2
    assert {line.get_label() for line in baselines} == {"real-only (80.0)", "synth-only (60.0)"}
    assert ax.get_legend().get_bbox_to_anchor().x0 > ax.get_window_extent().x1 - 1  # beside the axes
    one = analysis.RunData({"id": "a", "name": "off-the-shelf", "kind": "train"}, {}, [{"epoch": 0, "top1": 40.0}])
    many = analysis.RunData({"id": "b", "name": "adapt", "kind": "train"}, {},
                            [{"epoch": e, "top1": 40.0 + e} for e in range(3)])
    lines = {line.get_label(): line for line in analysis.curves_figure([one, many]).axes[0].lines}
    assert lines["off-the-shelf"].get_marker() not in (None, "None", "")
    assert lines["adapt"].get_marker() in (None, "None")
