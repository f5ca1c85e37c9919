"""Where a run's numbers go: TensorBoard (tb/), metrics.jsonl, and the progress bar.

TensorBoard also gets the run's resolved config, as text (the TEXT tab, `config`) when the run
starts and as hyperparameters (the HPARAMS tab: every setting as a dotted key, beside the last value
of every scalar the session logged) when it ends, so that runs can be compared setting by setting.
"""
from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import yaml
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from common.errors import UserError
from common.paths import require_writable, write_text_atomic
from .run_dir import flatten


def _quiet_tensorboard_worker(args, previous=threading.excepthook):
    """threading.excepthook: TensorBoard's background event writer dying of an OSError (a full disk)
    prints no traceback; the writer raises the same error again in the thread that writes next (its
    add, flush or close), where it is one line (common/errors.py) or gives way to the run's own error
    (RunLogger.finish)."""
    if isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_AsyncWriterThread":
        return
    previous(args)


threading.excepthook = _quiet_tensorboard_worker


class RunLogger:
    def __init__(self, run_dir, start_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        if not enabled:
            return
        self.jsonl = self.run_dir / "metrics.jsonl"
        if start_step:
            self._truncate_after(start_step)
        # purge_step drops events a crashed run logged after the checkpoint we resume from.
        self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=start_step + 1 if start_step else None)
        self.latest: dict[str, float] = {}  # the last value of every scalar tag (the hparams' metrics)

    def _truncate_after(self, step: int):
        """On resume, forget lines logged after the checkpoint (the run redoes those steps). A torn
        last line (the run was killed mid-write) is dropped; a bad line elsewhere is one error."""
        if not self.jsonl.exists():
            return
        lines = [line for line in self.jsonl.read_text(errors="replace").splitlines() if line.strip()]
        kept = []
        for i, line in enumerate(lines):
            try:
                record = json.loads(line)
            except ValueError:
                if i == len(lines) - 1:
                    continue  # torn by a kill mid-write
                raise UserError(f"{self.jsonl}: line {i + 1} is not JSON: delete or repair that line, "
                                f"then resume") from None
            if isinstance(record, dict) and record.get("step", 0) <= step:
                kept.append(line)
        self.jsonl.write_text("".join(line + "\n" for line in kept))

    def scalars(self, step: int, values: dict[str, float]):
        if not self.enabled:
            return
        self.latest.update(values)
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")

    def config(self, step: int, config: dict):
        """The resolved config as YAML in the TEXT tab (indented: a Markdown code block)."""
        if self.enabled:
            text = yaml.safe_dump(config, sort_keys=False)
            self.writer.add_text("config", "".join(f"    {line}\n" for line in text.splitlines()), step)

    def hparams(self, step: int, config: dict):
        """Every setting of `config` (nested, as dotted keys) as a hyperparameter, with the last
        value of every scalar this session logged as its metrics, in the run's own event files
        (torch's add_hparams would write them to a new sub-run and log the metrics a second time)."""
        if not self.enabled or not self.latest:
            return
        params = {key: value if isinstance(value, (bool, int, float, str)) else str(value)
                  for key, value in flatten(config).items()}
        for summary in hparams(params, dict(self.latest)):
            self.writer.file_writer.add_summary(summary, step)

    def image(self, tag: str, step: int, image):
        if self.enabled:
            self.writer.add_image(tag, image, step)

    def close(self):
        if self.enabled:
            self.writer.close()

    def finish(self, step: int, config: dict, failing: BaseException | None = None):
        """The hyperparameters with this session's last values, then close, however the run ends. When
        it ends by an error (`failing`), a write error of the logs themselves (TensorBoard's writer on
        the disk that error filled) is dropped: it would replace the error that says what happened.
        The writer is closed either way (its thread and files are not left to the process's exit)."""
        try:
            try:
                self.hparams(step, config)
            finally:
                self.close()
        except OSError:
            if failing is None:
                raise



def add_to_run(checkpoint, step: int, scalars: dict[str, float]) -> Path | None:
    """A checkpoint's scores as scalars in its run's tb/, at the checkpoint's step (a new event
    file; TensorBoard merges it with the run's). None, with a note, when the checkpoint is not in
    a run directory or tb/ is not writable (someone else's run)."""
    run_dir = Path(checkpoint).resolve().parent.parent
    if not (run_dir / "config.yaml").is_file():
        return None
    try:
        require_writable(run_dir / "tb", "tb", folder=True)
    except UserError:
        print(f"note: {run_dir / 'tb'} is not writable; the scores are not added to TensorBoard", file=sys.stderr)
        return None
    with SummaryWriter(str(run_dir / "tb")) as writer:
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, step)
    return run_dir / "tb"


def report_json(result: dict, path=None, allow_nan: bool = False):
    """Print a script's result as JSON and write it to `path` (atomically) when given."""
    text = json.dumps(result, indent=1, allow_nan=allow_nan)
    print(text)
    if path:
        write_text_atomic(path, text + "\n")
