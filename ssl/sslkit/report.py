"""``sslkit-report``: one table from many runs, one row per distinct config, mean ± std over seeds.

sslkit-report multirun/pretrain/2026-01-01_12-00-00
sslkit-report outputs/ multirun/ --metric 'knn/top1@*' --plot linear/top1 --x method.temperature

Every ``results.json`` below the given folders is a finished run and every ``failed.json`` a
failed job (see :mod:`sslkit.run.failures`). Runs whose configs are equal up to :data:`IGNORED_KEYS`
(the seed, where files go, machine-local settings) form one row; the table shows only the config
keys that differ between rows. The loading functions are the ones the notebooks use.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import re
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sslkit.run.failures import FAILED_FILE
from sslkit.run.results import RESULTS_FILE, read_document

#: Config keys (and their sub-keys) that do not make a distinct experiment: the seed (the table
#: averages over it), the resume switch and machine-local settings. Keys named ``save_dir`` (the
#: loggers' folders, which contain the run's own directory) are ignored as well.
IGNORED_KEYS = ("seed", "resume", "local")

#: Metrics shown by default (glob patterns over the metric names); ``rankme`` is the label-free
#: effective rank of the train features, which falls towards 1 when a representation collapses.
DEFAULT_METRICS = ("knn/top1@*", "linear/top1", "rankme")


@dataclass(frozen=True)
class Run:
    """One job's folder: its resolved config and final metrics, or the error it failed with
    (a folder whose file cannot be read has no config and says why in ``error``)."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, float]
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def readable(self) -> bool:
        return bool(self.config)

    @property
    def seed(self) -> Any:
        return self.config.get("seed")


def _run_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_file() and path.name in (RESULTS_FILE, FAILED_FILE):
            files.append(path)
        elif path.is_dir():
            files.extend(path.rglob(RESULTS_FILE))
            files.extend(path.rglob(FAILED_FILE))
        else:
            raise FileNotFoundError(
                f"{path} is neither a run folder nor a {RESULTS_FILE}; pass run or multirun "
                "folders (outputs/<task>/<run>, multirun/<task>/<time>)"
            )
    return sorted(set(files))


def load_runs(*paths: str | Path) -> list[Run]:
    """Every run below ``paths`` (folders, or ``results.json`` / ``failed.json`` files).

    A folder holding both files (a job that failed and then finished on a later try) counts as
    the newer of the two. A file that cannot be read gives a failed run without a config, so one
    damaged file never hides the others.
    """
    newest: dict[Path, Path] = {}
    for file in _run_files(paths):
        seen = newest.get(file.parent)
        if seen is None or file.stat().st_mtime > seen.stat().st_mtime:
            newest[file.parent] = file
    runs = []
    for folder, file in sorted(newest.items()):
        try:
            document = read_document(file)
        except (OSError, ValueError) as exc:
            runs.append(Run(folder, {}, {}, f"unreadable {file.name}: {exc}"))
            continue
        if file.name == RESULTS_FILE:
            runs.append(Run(folder, document.get("config", {}), document.get("metrics", {})))
        else:
            runs.append(Run(folder, document.get("config", {}), {}, document.get("error", "?")))
    return runs


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> ``{"method.temperature": 0.1, ...}``; lists become JSON strings."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list) else value
    return flat


def is_ignored(key: str, ignore: Sequence[str] = IGNORED_KEYS) -> bool:
    """Whether a flattened config key is left out when telling experiments apart."""
    return key.rsplit(".", 1)[-1] == "save_dir" or any(
        key == prefix or key.startswith(f"{prefix}.") for prefix in ignore
    )


def experiment_config(run: Run, ignore: Sequence[str] = IGNORED_KEYS) -> dict[str, Any]:
    """A run's flattened config without the ignored keys: equal for seeds of one experiment."""
    return {k: v for k, v in flatten(run.config).items() if not is_ignored(k, ignore)}


def _natural_key(value: Any) -> tuple:
    if isinstance(value, bool) or value is None:
        return (0, str(value))
    if isinstance(value, int | float):
        return (1, float(value))
    parts = re.split(r"(\d+)", str(value))
    return (2, tuple(int(p) if p.isdigit() else p for p in parts))


@dataclass
class Row:
    """One distinct config: its values of the varying keys and its runs' metric statistics."""

    values: dict[str, Any]
    runs: list[Run] = field(default_factory=list)

    @property
    def finished(self) -> list[Run]:
        return [run for run in self.runs if not run.failed]

    @property
    def failures(self) -> list[Run]:
        return [run for run in self.runs if run.failed]

    @property
    def seeds(self) -> list[Any]:
        return sorted((run.seed for run in self.finished), key=_natural_key)

    def values_of(self, metric: str) -> list[float]:
        return [run.metrics[metric] for run in self.finished if metric in run.metrics]

    def mean(self, metric: str) -> float | None:
        values = self.values_of(metric)
        return statistics.fmean(values) if values else None

    def std(self, metric: str) -> float | None:
        """Sample standard deviation over seeds (ddof=1); None below two runs."""
        values = self.values_of(metric)
        return statistics.stdev(values) if len(values) > 1 else None


@dataclass
class Table:
    """Rows of distinct configs, the config keys that differ, and the metrics shown."""

    keys: list[str]
    metrics: list[str]
    rows: list[Row]
    unreadable: list[Run] = field(default_factory=list)

    @property
    def failures(self) -> list[Run]:
        return [run for row in self.rows for run in row.failures] + self.unreadable


def select_metrics(runs: Sequence[Run], patterns: Sequence[str]) -> list[str]:
    """Metric names of the runs matching any glob pattern, in natural order."""
    names = {name for run in runs for name in run.metrics}
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    return sorted(chosen, key=_natural_key)


def summarise(
    runs: Sequence[Run],
    metrics: Sequence[str] = DEFAULT_METRICS,
    ignore: Sequence[str] = IGNORED_KEYS,
) -> Table:
    """Group runs by :func:`experiment_config`; keep the config keys that differ between groups.

    Runs whose file could not be read are kept aside in ``Table.unreadable``.
    """
    if not runs:
        raise ValueError(f"no runs to report: no {RESULTS_FILE} or {FAILED_FILE} was found")
    unreadable = [run for run in runs if not run.readable]
    runs = [run for run in runs if run.readable]
    configs = [experiment_config(run, ignore) for run in runs]
    all_keys = sorted({key for config in configs for key in config})
    keys = [k for k in all_keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]
    rows: dict[str, Row] = {}
    for run, config in zip(runs, configs, strict=True):
        values = {key: config.get(key) for key in keys}
        identity = json.dumps(config, sort_keys=True, default=str)
        rows.setdefault(identity, Row(values)).runs.append(run)
    ordered = sorted(rows.values(), key=lambda r: [_natural_key(r.values[k]) for k in keys])
    return Table(keys, select_metrics(runs, metrics), ordered, unreadable)


def column_title(key: str) -> str:
    """``method._target_`` -> ``method``; other keys as they are."""
    return key.removesuffix("._target_")


def format_value(key: str, value: Any) -> str:
    """Config values for display: class paths shortened to the class name."""
    if value is None:
        return "-"
    if key.endswith("_target_") and isinstance(value, str):
        return value.rsplit(".", 1)[-1]
    return str(value)


def format_stat(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def to_markdown(table: Table) -> str:
    """The table as Markdown, followed by the list of failed jobs if there are any."""
    header = [column_title(k) for k in table.keys] + ["seeds", *table.metrics]
    if table.failures:
        header.append("failed")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.rows:
        cells = [format_value(k, row.values[k]) for k in table.keys]
        cells.append(",".join(str(s) for s in row.seeds) or "-")
        cells += [format_stat(row.mean(m), row.std(m)) for m in table.metrics]
        if table.failures:
            cells.append(str(len(row.failures)))
        lines.append("| " + " | ".join(cells) + " |")
    if table.failures:
        lines += ["", f"Failed jobs ({len(table.failures)}):", ""]
        lines += [f"- `{run.path}`: {run.error}" for run in table.failures]
    return "\n".join(lines) + "\n"


def write_csv(table: Table, path: str | Path) -> Path:
    """The table as CSV: config columns, seeds, runs, failed, and ``<metric>_mean/_std``."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [*table.keys, "seeds", "runs", "failed"]
            + [f"{m}_{stat}" for m in table.metrics for stat in ("mean", "std")]
        )
        for row in table.rows:
            stats = []
            for metric in table.metrics:
                stats += [row.mean(metric), row.std(metric)]
            writer.writerow(
                [row.values[k] for k in table.keys]
                + [" ".join(str(s) for s in row.seeds), len(row.finished), len(row.failures)]
                + ["" if v is None else v for v in stats]
            )
    return path


def plot_metric(table: Table, metric: str, x: str, path: str | Path | None = None) -> Any:
    """Mean ± std of ``metric`` against config key ``x``; one line per value of the other keys.

    Numeric ``x`` values are placed on a numeric axis, anything else in table order. Returns
    the matplotlib figure (and saves it to ``path`` when given).
    """
    import matplotlib.pyplot as plt

    if not any(x in experiment_config(row.runs[0]) for row in table.rows):
        raise ValueError(f"{x!r} is not a config key of these runs; varying keys: {table.keys}")
    series: dict[str, list[tuple[Any, float, float]]] = {}
    for row in table.rows:
        mean = row.mean(metric)
        if mean is None:
            continue
        x_value = experiment_config(row.runs[0]).get(x)
        label = ", ".join(
            f"{column_title(k)}={format_value(k, row.values[k])}" for k in table.keys if k != x
        )
        series.setdefault(label, []).append((x_value, mean, row.std(metric) or 0.0))
    if not series:
        raise ValueError(f"no finished run has the metric {metric!r}")
    xs = sorted({p[0] for points in series.values() for p in points}, key=_natural_key)
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in xs)
    figure, axes = plt.subplots(figsize=(6, 4))
    for label, points in series.items():
        points.sort(key=lambda p: _natural_key(p[0]))
        positions = [p[0] if numeric else xs.index(p[0]) for p in points]
        axes.errorbar(
            positions,
            [p[1] for p in points],
            yerr=[p[2] for p in points],
            marker="o",
            capsize=3,
            label=label or None,
        )
    if not numeric:
        axes.set_xticks(range(len(xs)), [format_value(x, v) for v in xs])
    elif len(xs) > 2 and min(xs) > 0 and max(xs) / min(xs) >= 100:
        axes.set_xscale("log")
    axes.set_xlabel(column_title(x))
    axes.set_ylabel(f"{metric} (mean ± std over seeds)")
    if any(label for label in series):
        axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sslkit-report",
        description="Collect the results.json files below run/multirun folders into one table: "
        "one row per distinct config, mean ± std over seeds, the config keys that differ.",
    )
    parser.add_argument("paths", nargs="+", help="run or multirun folders (searched recursively)")
    parser.add_argument(
        "--metric",
        action="append",
        help=f"metric name or glob pattern, repeatable (default: {' '.join(DEFAULT_METRICS)})",
    )
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        help="config key to leave out when grouping runs, repeatable "
        f"(always left out: {', '.join(IGNORED_KEYS)}, *.save_dir)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for report.md, report.csv and plots (default: the first path if a folder)",
    )
    parser.add_argument("--plot", metavar="METRIC", help="also plot METRIC against --x")
    parser.add_argument(
        "--x",
        metavar="KEY",
        help="config key on the plot's x axis (default: the first varying key)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status (1 with one message on a user error)."""
    args = parse_args(argv)
    try:
        runs = load_runs(*args.paths)
        table = summarise(runs, args.metric or DEFAULT_METRICS, (*IGNORED_KEYS, *args.ignore))
        out = args.out or (Path(args.paths[0]) if Path(args.paths[0]).is_dir() else Path("."))
        out.mkdir(parents=True, exist_ok=True)
        markdown = to_markdown(table)
        (out / "report.md").write_text(markdown, encoding="utf-8")
        written = [out / "report.md", write_csv(table, out / "report.csv")]
        if args.plot:
            import matplotlib.pyplot as plt

            x = args.x or (table.keys[0] if table.keys else None)
            if x is None:
                raise ValueError("all runs share one config; name the plot's x axis with --x KEY")
            written.append(out / f"report_{_slug(args.plot)}_vs_{_slug(column_title(x))}.png")
            plt.close(plot_metric(table, args.plot, x, written[-1]))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(markdown)
    print("written: " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
