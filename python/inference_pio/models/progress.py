"""Progress bars for long transfers and checks (rich, on stderr).

Shown unless the caller passes ``enabled=False`` or ``INFERENCE_PIO_PROGRESS=0`` is set;
stdout stays free for command output.
"""

from __future__ import annotations

import os
from typing import Callable

PROGRESS_ENV = "INFERENCE_PIO_PROGRESS"


def progress_wanted(enabled: bool | None) -> bool:
    if enabled is not None:
        return enabled
    return os.environ.get(PROGRESS_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


class TransferProgress:
    """``with TransferProgress(True) as p: advance = p.task("model.gguf", total=n); advance(k)``.

    Thread-safe (rich's Progress is), so a worker thread may advance while another renders.
    When disabled every call is a no-op.
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._progress = None

    def __enter__(self) -> "TransferProgress":
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                TimeRemainingColumn(), console=Console(stderr=True), transient=False,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def task(self, description: str, total: int | None, completed: int = 0) -> Callable[[int], None]:
        """Add a bar; return the function that advances it by a number of bytes."""
        if self._progress is None:
            return lambda n: None
        progress = self._progress
        task_id = progress.add_task(description, total=total, completed=completed)
        return lambda n: progress.advance(task_id, n)
