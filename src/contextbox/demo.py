"""Kept for imports written before the demos became a package: see :mod:`contextbox.demos`."""

from .demos.common import cache_dir, download_war_and_peace, find_text, read_share
from .demos.war_and_peace import QUESTION, WORDS, insert_needle, make_needle, run_demo, run_needle

__all__ = ["QUESTION", "WORDS", "cache_dir", "download_war_and_peace", "find_text", "insert_needle", "make_needle",
           "read_share", "run_demo", "run_needle"]
