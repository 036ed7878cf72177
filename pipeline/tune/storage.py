"""Where a study lives: an SQLite file beside the runs, or any database URL Optuna's ``RDBStorage`` takes.

Connections time out within seconds, so a server that does not answer is one line, not a minute's hang; SQLite
waits for a writer's lock instead of failing, so several processes on one machine share the file.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import ConfigError

DB_FILE = "tune.db"
CONNECT_TIMEOUT_S = 5
SQLITE_BUSY_S = 60


def storage_url(runs_dir: str | Path, url: str | None = None) -> str:
    """``url``, or the default: ``sqlite:///<runs_dir>/tune.db`` (absolute, so every worker opens the same file)."""
    return url or f"sqlite:///{(Path(runs_dir).resolve() / DB_FILE).as_posix()}"


def shown(url: str) -> str:
    """``url`` with its password hidden (it goes into messages)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL sqlalchemy reads: shown as given, without what follows an '@'
        return url.split("@")[-1]


def with_driver(url: str) -> str:
    """``postgresql://`` with the PostgreSQL driver that is installed: SQLAlchemy 2.1 reads a bare ``postgresql://``
    as psycopg 3, while the project installs psycopg2 (``psycopg2-binary``); a URL naming its driver is kept."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": SQLITE_BUSY_S}}
    if url.startswith(("postgresql", "mysql")):
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True}
    return {}


def open_storage(url: str):
    """Optuna's ``RDBStorage`` on ``url``; ConfigError (one line) when the database does not answer, refuses, or
    the URL names no database sqlalchemy knows."""
    import optuna

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(with_driver(url), engine_kwargs=_engine_kwargs(url))
    except Exception as exc:  # noqa: BLE001 - sqlalchemy's, the driver's and optuna's errors all mean "not usable"
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
        raise ConfigError(f"The study storage {shown(url)} cannot be used ({type(exc).__name__}: {reason}); check "
                          "that the database server runs and the URL is right (postgresql://USER:PASSWORD@HOST:PORT/"
                          "DB), or leave --storage out for an SQLite file beside the runs.") from None
