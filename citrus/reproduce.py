"""`citrus reproduce <run_dir> [overrides]`: a run again from its run.json (same job, same
overrides, any given appended) into `<run_dir>-reproduced`, then which metrics differ."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("citrus")


def reproduce(argv: list[str], run_job: Callable[[list[str]], int | None]) -> int:
    """`citrus reproduce <run_dir> [overrides]`: the run's job with its recorded overrides (plus
    any given) into <run_dir>-reproduced, then the two runs' metrics side by side."""
    from citrus.record import REDACTED, git_state

    if not argv or argv[0].startswith("-"):
        print("usage: citrus reproduce <run_dir> [overrides...]", file=sys.stderr)
        return 2
    source = Path(argv[0])
    path = source / "run.json"
    if not path.is_file():
        print(f"citrus reproduce: no run.json in {source}", file=sys.stderr)
        return 2
    record = json.loads(path.read_text())
    redacted = [o for o in record["overrides"] if o.endswith("=" + REDACTED)]
    if redacted:
        print(
            f"citrus reproduce: {', '.join(redacted)} held a secret; "
            "pass it again from the environment",
            file=sys.stderr,
        )
        return 2
    now = git_state()
    if record["git"].get("commit") and (now["commit"], now["dirty"]) != (
        record["git"]["commit"],
        False,
    ):
        log.warning(
            "the code is at %s%s, the run was made at %s%s: results may differ",
            now["commit"],
            " (dirty)" if now["dirty"] else "",
            record["git"]["commit"],
            " (dirty)" if record["git"]["dirty"] else "",
        )
    # where the original ran is not part of the experiment: a fresh directory next to it
    keep = [
        o
        for o in record["overrides"]
        if not o.startswith(("hydra.run.dir=", "hydra.sweep.dir=", "hydra.mode="))
    ]
    target = next((a.split("=", 1)[1] for a in argv[1:] if a.startswith("hydra.run.dir=")), None)
    target = Path(target) if target else _fresh(source.with_name(source.name + "-reproduced"))
    extra = [a for a in argv[1:] if not a.startswith("hydra.run.dir=")]
    code = run_job([record["job"], *keep, *extra, "hydra.mode=RUN", f"hydra.run.dir={target}"])
    if not (target / "run.json").is_file():
        print(f"the reproduction stopped before it started (see {target})", file=sys.stderr)
        return 1
    again = json.loads((target / "run.json").read_text())
    if again["status"] != "completed":
        print(f"the reproduction {again['status']}: {again.get('error')}", file=sys.stderr)
        return 1
    print(compare_metrics(record.get("metrics", {}), again.get("metrics", {}), source, target))
    print("\n".join(compare_accuracy(source, target)))
    print("\n".join(compare_compute(record.get("compute", {}), again.get("compute", {}))))
    return code


def _fresh(path: Path) -> Path:
    n, out = 1, path
    while out.exists():
        n += 1
        out = path.with_name(f"{path.name}-{n}")
    return out


def compare_metrics(
    before: dict[str, Any], after: dict[str, Any], source: Path, target: Path
) -> str:
    """The numeric metrics of both runs, and which differ (timings always do: left out)."""
    # timings always differ; model_dir paths were metrics in run.json files written before outputs
    timing = ("seconds", "tokens_per_s", "model_dir")
    keys = sorted(
        k
        for k in set(before) | set(after)
        if isinstance(before.get(k, after.get(k)), (int, float)) and not k.endswith(timing)
    )
    differ = [k for k in keys if before.get(k) != after.get(k)]
    lines = [
        f"reproduced {source} -> {target}: {len(keys) - len(differ)}/{len(keys)} metrics identical"
    ]
    lines += [f"  {k}: {before.get(k)} -> {after.get(k)}" for k in differ]
    return "\n".join(lines)


def compare_accuracy(source: Path, target: Path) -> list[str]:
    """Each evaluation's accuracy in both runs, and whether the new one lies inside the
    original's 95% interval (a difference inside it is noise at that many questions)."""
    from citrus.report import load_run

    before, after = load_run(source), load_run(target)
    lines = []
    for stage, tasks in before.accuracy.items():
        for task, acc in tasks.items():
            new = after.accuracy.get(stage, {}).get(task)
            if new is None:
                continue
            ci = before.ci95.get(stage, {}).get(task)
            if new == acc:
                verdict = "identical"
            elif ci is None:
                verdict = "differs (the original recorded no CI)"
            else:
                low, high = ci
                inside = "inside" if low <= new <= high else "OUTSIDE"
                verdict = f"{inside} the original's 95% CI [{100 * low:.1f}, {100 * high:.1f}]"
            lines.append(
                f"  {stage}/{task} accuracy {100 * acc:.1f}% -> {100 * new:.1f}%: {verdict}"
            )
    return (["accuracy:"] + lines) if lines else []


def compare_compute(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Where the two runs' compute environments differ (float results depend on them)."""
    keys = sorted(set(before) | set(after))
    differ = [
        f"  {k}: {before.get(k)} -> {after.get(k)}" for k in keys if before.get(k) != after.get(k)
    ]
    if not before or not differ:
        return []
    return ["compute environment differs (results may differ with it):", *differ]
