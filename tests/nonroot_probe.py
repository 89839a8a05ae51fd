"""Run by tests/test_l3_guard.py under ``unshare --user --map-user=1000``: an L3 run as an ordinary user.

Prints one JSON line: the uid, the run's status, whether the daemon the first cell started is
alive, what the unix-socket cell and the 4 x 700 MB cell printed, the run's leftover child processes
and its warnings.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, "tests")

from helpers import cmd, run  # noqa: E402

from contextbox.levels import l3_guard  # noqa: E402

DAEMON = ("import os, time\nr, w = os.pipe()\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
          "        os.write(w, str(os.getpid()).encode())\n        time.sleep(1000)\n    os._exit(0)\nos.wait()\n"
          "print('daemon', os.read(r, 20).decode())")

FOUR = ("import os, time\npids = []\nfor i in range(4):\n    pid = os.fork()\n    if pid == 0:\n"
        "        b = b'\\x01' * (700 << 20)\n        time.sleep(20)\n        os._exit(0)\n    pids.append(pid)\n"
        "for p in pids:\n    os.waitpid(p, 0)\nprint('all four done')")


def main(path: str) -> None:
    sock = f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({path!r})\nprint(s.recv(100))"
    result, _ = run([f"```native\n{DAEMON}\n```", f"```native\n{sock}\n```", f"```native\n{FOUR}\n```",
                     cmd("final", answer="done")], levels="l1,l3")
    outs = [e.data["output"] for e in result.events if e.type == "action_end" and e.data.get("level") == "l3"]
    pid = int(outs[0].split("daemon ", 1)[1].split()[0])
    time.sleep(0.2)
    me = os.getpid()
    children = [p for p in l3_guard._pids() if p != me and (f := l3_guard._stat_fields(p))
                and f[0] not in ("Z", "X") and int(f[1]) == me]
    warnings = [e.data["message"] for e in result.events if e.type == "warning"]
    print(json.dumps({"uid": os.getuid(), "status": result.status, "daemon_alive": l3_guard._live(pid),
                      "socket": outs[1], "four": outs[2], "children": children, "warnings": warnings}))


if __name__ == "__main__":
    main(sys.argv[1])
