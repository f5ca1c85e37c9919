"""Where a run's numbers go: TensorBoard (tb/), metrics.jsonl, and the progress bar."""
from __future__ import annotations

import json
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from common.errors import UserError


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
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")

    def image(self, tag: str, step: int, image):
        if self.enabled:
            self.writer.add_image(tag, image, step)

    def close(self):
        if self.enabled:
            self.writer.close()
