"""Progress of the commands that train (verify, experiment): done of total, the rate
and an ETA, drawn by tqdm on stderr, and only when stderr is a terminal (a log or a
pipe gets nothing). tqdm is imported when a bar is drawn, never at start-up.
"""

from __future__ import annotations

import sys
import time


class Progress:
    """`total` units (runs, networks), `done` of them finished before (a resumed sweep).
    `cell` names what trains now and `on_step` its step; `finished` counts units done."""

    def __init__(self, total: int, done: int = 0, stream=sys.stderr, unit: str = "runs"):
        self.bar = None  # stream None: no bar
        if getattr(stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit=f" {unit}", file=stream, dynamic_ncols=True,
                            smoothing=0.05, mininterval=0.2)
        self.label, self.steps, self.last = "", 0, 0.0

    def cell(self, label: str, steps: int) -> None:
        self.label, self.steps = label, steps
        self._postfix(label)

    def on_step(self, step: int) -> None:
        now = time.monotonic()
        if self.steps and now - self.last >= 0.2:  # called every training step: redraw 5x a second
            self.last = now
            self._postfix(f"{self.label} step {step}/{self.steps}")

    def finished(self, units: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(units)
            self.bar.refresh()  # a unit done is always shown (update() alone waits mininterval)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def _postfix(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text)
