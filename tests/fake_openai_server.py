"""The fake OpenAI server in a process of its own: the stand-in for ``python -m llama_cpp.server``.

    python tests/fake_openai_server.py --port P [--model NAME] [--reply-file F] [--child-pid-file F]

Serves :class:`fakeserver.FakeLLMServer` on 127.0.0.1:P until SIGTERM. ``--reply-file`` holds the
one reply it always gives; ``--child-pid-file`` starts a child process (``sleep``) and writes its
pid there, so a test can check that stopping the server kills its whole process group.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakeserver import FakeLLMServer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", default="fake-gguf")
    p.add_argument("--reply-file")
    p.add_argument("--child-pid-file")
    p.add_argument("--latency", type=float, default=0.0, help="answer every request after this many seconds")
    a = p.parse_args()
    if a.child_pid_file:  # not reaped here: the test checks that stopping kills the whole group
        child = subprocess.Popen(["sleep", "600"])
        Path(a.child_pid_file).write_text(str(child.pid))
    reply = Path(a.reply_file).read_text(encoding="utf-8") if a.reply_file else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FakeLLMServer(replies=reply, model=a.model, port=a.port, latency=a.latency):
        stop.wait()


if __name__ == "__main__":
    main()
