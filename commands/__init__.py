"""Commands: frozen pydantic models named in the imperative, and one handler each.

Handlers are plain functions of `(app, command)`, called by the API and by workers alike;
they check rules, call aggregate methods and save. No HTTP, no read models, no Dramatiq.
"""
