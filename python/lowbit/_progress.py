"""The progress bar that training calls show when no callback is given.

tqdm's (tqdm.auto: a terminal or a notebook widget) when tqdm is installed; otherwise one line
redrawn in place on a terminal, or one line per epoch elsewhere (logs, CI).
"""
import sys
import time


class ProgressBar:
    """Called with a lowbit.Progress after every batch."""

    def __init__(self, phase):
        self.phase = phase
        self.bar = None
        self.epoch = 0
        self.last_draw = 0.0
        try:
            from tqdm.auto import tqdm  # noqa: F401

            self.tqdm = tqdm
        except ImportError:
            self.tqdm = None
        self.tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()

    def __call__(self, p):
        if self.tqdm is not None:
            self._tqdm(p)
        else:
            self._text(p)

    def _tqdm(self, p):
        if p.epoch != self.epoch:
            if self.bar is not None:
                self.bar.close()
            self.epoch = p.epoch
            self.bar = self.tqdm(total=p.steps, desc=f"{self.phase} {p.epoch}/{p.epochs}", unit="batch", leave=True)
        self.bar.n = p.step
        postfix = {"loss": f"{p.loss:.4f}", "acc": f"{p.accuracy:.4f}"}
        if p.epoch_done and p.val_accuracy >= 0:
            postfix["val_acc"] = f"{p.val_accuracy:.4f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.refresh()
        if p.epoch_done:
            self.bar.close()
            self.bar = None

    def _text(self, p):
        line = f"{self.phase} epoch {p.epoch}/{p.epochs}"
        if self.tty:
            now = time.monotonic()
            if not p.epoch_done and now - self.last_draw < 0.1:
                return
            self.last_draw = now
            width = 30
            filled = width * p.step // max(p.steps, 1)
            line += f" [{'=' * filled}{'.' * (width - filled)}] {p.step}/{p.steps}"
        elif not p.epoch_done:
            return
        line += f"  loss {p.loss:.4f}  accuracy {p.accuracy:.4f}"
        if p.epoch_done and p.val_accuracy >= 0:
            line += f"  val_accuracy {p.val_accuracy:.4f}"
        line += f"  {p.elapsed_seconds:.1f} s"
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if p.epoch_done else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
