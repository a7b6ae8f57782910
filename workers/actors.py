"""Every actor module, for `dramatiq workers.broker:setup workers.actors`.

The broker is set up first (the CLI's broker argument), so the actors bind to it.
"""

from workers import automation_events, execution, webhooks

__all__ = ["automation_events", "execution", "webhooks"]
