"""The executor plugin interface, where users have always found it.

    from seq_assets.executors import Executor, register_executor

It lives in ``seq_assets.core.executors``; this module keeps the public import path.
"""

from seq_assets.core.executors import EXECUTORS, Executor, register_executor  # noqa: F401
