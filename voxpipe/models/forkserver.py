"""Imported by the fork server only (``set_forkserver_preload``), never by the bot's process.

Every model worker is forked from the fork server and inherits its environment. A child first
imports the bot's main module (as ``spawn`` does, unless it was run with ``-m``), which may
import numpy before the worker's own code runs; the numeric libraries read their thread limits
once, at import. So the limits go into the fork server's environment here, where they hold for
every worker from its first instruction, and the bot's process keeps its own.
"""

from voxpipe.models.worker import limit_threads

limit_threads(1)
