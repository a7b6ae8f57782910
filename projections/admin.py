"""`flowledger projections status | rebuild`: the operator's side of `projections.rebuild`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from flowledger.settings import Settings

if TYPE_CHECKING:
    from events.application import Flowledger
    from projections.rebuild import Result
    from projections.runner import Projection


def projections_command(settings: Settings, args: argparse.Namespace) -> int:
    from events.application import Flowledger
    from projections import all_projections
    from projections.rebuild import RebuildBusy, format_status, rebuild, status

    projections = all_projections()
    known = [p.name for p in projections]
    names = getattr(args, "names", None) or []
    unknown = [n for n in names if n not in known]
    if unknown:
        print(
            f"flowledger: unknown projection {', '.join(unknown)}; known: {', '.join(known)}",
            file=sys.stderr,
        )
        return 2
    app = Flowledger(settings)
    try:
        if args.projections_command == "status":
            report = status(app, projections)
            print(json.dumps(report, indent=2) if args.json else format_status(report))
            return 0
        for projection in projections:
            if names and projection.name not in names:
                continue
            try:
                result = _rebuild_one(app, projection, rebuild, show=not args.no_progress)
            except RebuildBusy as e:
                print(f"flowledger: {e}", file=sys.stderr)
                return 1
            print(
                f"{result.name}: rebuilt at position {result.position:,} ({result.mode}),"
                f" {result.events:,} events in {result.seconds:.1f} s"
                f" ({result.events_per_second:,.0f} events/s)",
                flush=True,
            )
        return 0
    finally:
        app.close()
        app.db.close()


def _rebuild_one(
    app: Flowledger, projection: Projection, rebuild: Callable[..., Result], show: bool
) -> Result:
    from tqdm import tqdm

    top = int(app.recorder.max_notification_id() or 0)
    with tqdm(
        total=top, desc=projection.name, unit="pos", unit_scale=True, disable=not show,
        file=sys.stderr,
    ) as bar:  # fmt: skip

        def progress(n: int) -> None:
            if bar.n + n > bar.total:
                bar.total = bar.n + n
            bar.update(n)

        result = rebuild(app, projection, progress)
        bar.total = bar.n  # it stopped at the live position, maybe short of the head
        bar.refresh()
        return result
