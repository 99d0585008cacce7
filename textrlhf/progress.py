"""The project's one progress style: tqdm bars, and Hugging Face ``Trainer`` output reduced to its bar.

Every long loop of the project (sampling, training, evaluation) shows a :func:`progress_bar`; library
bars are either replaced by one (SB3's ``rich`` bar, see ``agents.callbacks.ProgressBar``) or silenced
(the ``Trainer``'s per-log dictionaries, whose numbers are strings, see :func:`bar_only`). Metrics are
never lost by this: each stage writes them to its CSV/JSON files.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar:24}| {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}]"
"""One line per bar: what, how far, how long."""


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    disable: bool = False,
) -> Any:
    """A ``tqdm.auto`` bar in the project's format (``disable=True``: a silent pass-through)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, bar_format=BAR_FORMAT, dynamic_ncols=True)


def bar_only(trainer: Any, desc: str = "train") -> Any:
    """Make a ``transformers.Trainer`` show at most one bar, in the project's format, and no printed logs.

    The Trainer prints every log (``{'loss': '0.7327', ...}``, numbers as strings) through its
    ``PrinterCallback`` (no bar) or ``ProgressCallback`` (bar, plus a nested bar per evaluation); both
    are replaced by one :func:`progress_bar` over the optimizer steps, if the Trainer had a bar. The logs
    stay in ``trainer.state.log_history``, which the project writes to CSV.
    """
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class _StepBar(ProgressCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.training_bar = progress_bar(total=state.max_steps, desc=desc, unit="step")
            self.current_step = 0

        def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
            return None  # evaluations inside training are short: no nested bar

        def on_log(self, args, state, control, logs=None, **kwargs):
            return None

    had_bar = any(isinstance(cb, ProgressCallback) for cb in trainer.callback_handler.callbacks)
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if had_bar:
        trainer.add_callback(_StepBar())
    return trainer
