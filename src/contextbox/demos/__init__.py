"""``rlm demo NAME``: the demos, one module each."""

from __future__ import annotations

import argparse


def run_demo(args: argparse.Namespace) -> int:
    from .war_and_peace import run_demo as run

    return run(args)
