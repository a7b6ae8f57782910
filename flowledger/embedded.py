"""`flowledger run`: the whole system in one process, with no server to install.

SQLite event store and read models in `./var/`, Dramatiq's in-process StubBroker with
worker threads, the dispatcher and one follower for all the projections as threads (woken
in-process, since the SQLite recorder cannot subscribe), the scheduler as a thread, and a
threaded WSGI server for the API.
"""

from __future__ import annotations

import socketserver
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog

from flowledger.settings import Settings

log = structlog.get_logger()


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # requests are logged by the API's middleware


class Embedded:
    """Everything started in-process; `stop()` winds it down in order."""

    def __init__(self, settings: Settings) -> None:
        from workers import broker

        self.broker = broker.setup(settings)  # before any actor module is imported
        import workers.actors  # noqa: F401  (declares the actors on that broker)
        from api.app import Deps, create_app
        from events.application import Flowledger
        from flowledger.processes import Loop, projection_followers, run_followers
        from workers import context
        from workers.dispatcher import dispatcher
        from workers.scheduler import Scheduler

        self.app = Flowledger(settings)
        context.use(self.app)
        # Two followers of the log: the dispatcher and one for every projection.
        self.followers: list[Loop] = [dispatcher(self.app), *projection_followers(self.app)]
        self.scheduler = Scheduler(self.app)
        self.threads = run_followers([*self.followers, self.scheduler])
        self.worker = broker.start_embedded_worker(self.broker, threads=8)
        from workers.recovery import run_sweeps

        self.stopped = threading.Event()
        run_sweeps(self.app, self.stopped)  # the in-memory broker forgets on restart
        self.wsgi = create_app(Deps(settings=settings, app=self.app, db=self.app.db, redis=None))

    def stop(self) -> None:
        self.stopped.set()
        for follower in self.followers:
            follower.stop()
        self.scheduler.stop()
        self.worker.stop(timeout=5000)
        for thread in self.threads:
            thread.join(timeout=5)


def serve(settings: Settings, host: str, port: int) -> int:
    system = Embedded(settings)
    server = make_server(host, port, system.wsgi, _ThreadingServer, _QuietHandler)
    url = f"http://{host}:{server.server_port}"
    print(f"Flowledger is running on {url} (embedded: {settings.database_url})", flush=True)
    print("Try it:", flush=True)
    print(
        f"  curl -s -X POST {url}/api/v1/auth/register -H 'Content-Type: application/json' "
        """-d '{"email": "you@example.com", "password": "correct horse battery", """
        """"full_name": "You"}'""",
        flush=True,
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        system.stop()
    return 0
