"""`flowledger ...`: run the embedded mode, or one production process."""

from __future__ import annotations

import argparse
import sys

from flowledger.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowledger", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="everything in one process on the embedded default")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=None, help="default: $PORT or 8000")
    sub.add_parser("dispatcher", help="follow the log and send Dramatiq messages")
    sub.add_parser("scheduler", help="queue the runs of schedule-triggered workflows")
    projector = sub.add_parser("projector", help="keep the read models up to date")
    projector.add_argument("names", nargs="*", help="only these projections (default: all)")
    # -- projections (status, rebuild) --
    projections = sub.add_parser("projections", help="read models: status and rebuilds")
    projections_sub = projections.add_subparsers(dest="projections_command", required=True)
    status = projections_sub.add_parser("status", help="each read model's position and lag")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    rebuild = projections_sub.add_parser(
        "rebuild", help="build read models anew beside the live ones, then switch atomically"
    )
    rebuild.add_argument("names", nargs="*", help="only these projections (default: all)")
    rebuild.add_argument("--no-progress", action="store_true", help="no progress bar")
    # -- end projections --
    from flowledger import audit  # the whole group lives there

    audit.add_parser(sub)
    args = parser.parse_args(argv)

    try:
        settings = Settings()
    except Exception as e:  # pydantic names the variable; no stack trace for operators
        print(f"flowledger: bad setting: {e}", file=sys.stderr)
        return 2
    from flowledger import logs

    logs.configure(settings.log_format, settings.log_level)
    if args.command == "audit":
        return audit.main(args, settings)
    if args.command == "run":
        from flowledger.embedded import serve

        return serve(settings, args.host, args.port or settings.port)
    if args.command == "dispatcher":
        return _follow(settings, dispatcher=True, names=[])
    if args.command == "scheduler":
        return _schedule(settings)
    if args.command == "projections":
        from projections.admin import projections_command

        return projections_command(settings, args)
    return _follow(settings, dispatcher=False, names=args.names)


def _follow(settings: Settings, *, dispatcher: bool, names: list[str]) -> int:
    from events.application import Flowledger
    from flowledger.processes import Loop, projection_followers, run_followers, stop_on_signals
    from workers import broker

    broker.setup(settings)
    app = Flowledger(settings)
    followers: list[Loop]
    if dispatcher:
        from workers.dispatcher import dispatcher as make_dispatcher

        followers = [make_dispatcher(app)]
    else:
        try:
            followers = list(projection_followers(app, names))  # one follower for them all
        except ValueError as e:
            print(f"flowledger: {e}", file=sys.stderr)
            app.close()
            return 2
    done = stop_on_signals(followers)
    threads = run_followers(followers)
    if dispatcher:
        from workers.recovery import run_sweeps

        run_sweeps(app, done)
    done.wait()
    for thread in threads:
        thread.join(timeout=5)
    app.close()
    return 0


def _schedule(settings: Settings) -> int:
    from events.application import Flowledger
    from flowledger.processes import run_followers, stop_on_signals
    from workers.scheduler import Scheduler

    app = Flowledger(settings)
    scheduler = Scheduler(app)
    done = stop_on_signals([scheduler])
    [thread] = run_followers([scheduler])
    done.wait()
    thread.join(timeout=5)
    app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
