"""contextbox — a Recursive Language Model engine.

    from contextbox import RLM, Context
    result = RLM(model="openai/gpt-4o-mini").run("Who wrote the letter?", Context.load("novel.txt"))
    print(result.answer, result.status, result.iterations, result.usage.total.total_tokens)

    RLM(...).completion(context, root_prompt=question).response      # the rlms shape
    await rlm.arun(question, context)                                  # async; rlm.astream(...) for events
    rlm.run(question, context, answer_type=MyPydanticModel).parsed     # typed answers
    with rlm.session(context) as s: s.ask(q1); s.ask(q2)               # variables persist between questions
"""

from .aio import AsyncRunStream
from .config import Config
from .context import Context, Document
from .engine import RLM, RunStream
from .errors import ConfigError, ContextboxError, ContextError, UsageError
from .session import RLMSession
from .types import Event, Limits, RLMCompletion, RunResult, Usage, UsageReport

__version__ = "0.1.0"
__all__ = [
    "RLM",
    "AsyncRunStream",
    "Config",
    "ConfigError",
    "Context",
    "ContextError",
    "ContextboxError",
    "RLMCompletion",
    "RLMSession",
    "UsageError",
    "Document",
    "Event",
    "Limits",
    "RunResult",
    "RunStream",
    "Usage",
    "UsageReport",
    "__version__",
]
