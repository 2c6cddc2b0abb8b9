"""Settings from the environment only (TASKSERVICE_*): required values have no default (lesson 02:
a secret with a default, or one generated per process, fails open or gives random 401s)."""

from functools import cached_property

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The job worker's connections: one for the queue (dequeue, LISTEN, heartbeats) + a pool of two for its
# jobs (lesson 13, section 3.3). Counted in the connection arithmetic below.
JOB_WORKER_CONNECTIONS = 3


def async_database_url(url: str) -> str:
    """Accept the usual postgres:// spellings; the app talks asyncpg through SQLAlchemy."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix):]
    return url


class Settings(BaseSettings):
    # hide_input_in_errors: a validation error shows the values it was given (a missing variable shows all the
    # others, the database password and the key among them), and startup errors end up in logs.
    model_config = SettingsConfigDict(env_prefix="TASKSERVICE_", extra="ignore", hide_input_in_errors=True)

    database_url: str = Field(repr=False)  # it holds the database password: not in repr(settings), nor in tracebacks
    jwt_private_key: SecretStr  # an Ed25519 private key, PEM (`python -m taskservice.keys` makes one)
    jwt_issuer: str = "taskservice"
    jwt_audience: str = "taskservice-api"
    access_token_minutes: int = Field(15, ge=1, le=24 * 60)

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(8025, ge=1, le=65535)
    smtp_timeout_seconds: float = Field(5.0, gt=0)
    mail_from: str = "Task Service <no-reply@taskservice.example>"

    # Lesson 07: a bounded pool (max_overflow=-1 would mean unlimited), a short wait, then 503.
    db_pool_size: int = Field(5, ge=1)
    db_max_overflow: int = Field(0, ge=0)
    db_pool_timeout_seconds: float = Field(2.0, gt=0)
    web_workers: int = Field(2, ge=1)
    db_max_connections: int = Field(100, ge=1)

    # The mail job's retries, in the database (lesson 13): waits of r, 2r, 4r, ... then held as `failed`.
    job_max_retries: int = Field(5, ge=0, le=20)
    job_retry_seconds: float = Field(2.0, gt=0)

    log_level: str = "INFO"
    telemetry: bool = False

    @field_validator("log_level")
    @classmethod
    def known_level(cls, level: str) -> str:
        # else logging's ValueError comes out of create_app as a traceback, not as one named setting
        if level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level.upper()

    @field_validator("database_url")
    @classmethod
    def async_driver(cls, url: str) -> str:
        return async_database_url(url)

    @cached_property
    def asyncpg_dsn(self) -> str:
        """The same server as a plain DSN, for the pgqueuer worker's own asyncpg connections."""
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)

    @property
    def connections_needed(self) -> int:
        """Lesson 07's arithmetic: every web worker's full pool, plus the job worker."""
        return self.web_workers * (self.db_pool_size + self.db_max_overflow) + JOB_WORKER_CONNECTIONS
