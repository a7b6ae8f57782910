"""Named places where a crash test may `kill -9` this process, between two steps.

`FLOWLEDGER_FAILPOINT=dispatcher.after_send:3` kills the process the 3rd time it reaches
`hit("dispatcher.after_send")`. Unset (always, outside tests), `hit` is one dict lookup.
"""

from __future__ import annotations

import os
import signal

_name, _, _count = os.environ.get("FLOWLEDGER_FAILPOINT", "").partition(":")
_remaining = int(_count or 1)


def hit(name: str) -> None:
    global _remaining
    if name != _name:
        return
    _remaining -= 1
    if _remaining <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
