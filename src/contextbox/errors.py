"""All contextbox errors, in one hierarchy.

    ContextboxError                 base of everything raised on purpose
    ├── UsageError                  bad flag, bad value, unknown model spec      (CLI exit 2)
    │   ├── ConfigError             bad or unknown key in a config file
    │   └── ContextError            context cannot be loaded (missing file, bad glob)
    ├── ProviderError               a model call failed
    │   ├── AuthError               401/403: names the env var or config key to set
    │   ├── RateLimitError          429 (retryable)
    │   ├── ProviderUnavailable     5xx, timeout, connection error, malformed body (retryable)
    │   ├── ContextWindowError      prompt larger than the model's window
    │   └── ScriptExhausted         the scripted provider has no replies left
    ├── CommandError                an L1 command or code cell is invalid; shown to the model, run goes on
    └── RunStopped                  internal: a limit or a cancel ends the run
        ├── BudgetExceeded
        ├── RunTimeout
        └── RunCancelled

The library raises these; the CLI and the server translate them into exit codes and
HTTP statuses at their boundary. Users never see a traceback for a ``UsageError``.
"""

from __future__ import annotations


class ContextboxError(Exception):
    """Base class of every error contextbox raises on purpose."""


class UsageError(ContextboxError):
    """The user asked for something that cannot work (exit code 2)."""


class ConfigError(UsageError):
    """A configuration file or value is invalid."""


class ContextError(UsageError):
    """The context could not be loaded."""


class ProviderError(ContextboxError):
    """A model call failed."""

    retryable: bool = False

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class AuthError(ProviderError):
    """The provider refused the credentials."""


class RateLimitError(ProviderError):
    retryable = True


class ProviderUnavailable(ProviderError):
    retryable = True


class ContextWindowError(ProviderError):
    """The prompt does not fit the model's context window."""


class ScriptExhausted(ProviderError):
    """The scripted provider ran out of replies."""


class CommandError(ContextboxError):
    """An action the model issued is invalid. The message is shown to the model."""


class RunStopped(ContextboxError):
    """A limit or a cancel request ends the run."""

    status = "failed"


class BudgetExceeded(RunStopped):
    status = "budget_exceeded"


class RunTimeout(RunStopped):
    status = "timeout"


class RunCancelled(RunStopped):
    status = "cancelled"
