"""What a command prints to stdout when it is done: files written, time taken, metrics."""

from __future__ import annotations


def format_seconds(seconds: float) -> str:
    """``42.0 s``, ``3m05s``, ``2h07m``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    s = round(seconds)
    return f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{(s % 3600) // 60:02d}m"


def print_summary(command: str, seconds: float, metrics: dict, written: list) -> None:
    """What was written where, and the time taken, to stdout."""
    epochs, per_epoch = metrics.get("epochs"), metrics.get("seconds_per_epoch")
    trained = f" ({epochs} epochs, {per_epoch:.2f} s/epoch)" if epochs and per_epoch else ""
    print(f"mixvi {command}: done in {format_seconds(seconds)}{trained}")
    rows = [(label, path, note) for label, path, note in written if path is not None]
    width = max((len(label) for label, _, _ in rows), default=0)
    for label, path, note in rows:
        print(f"  {label.ljust(width)}  {path}" + (f"  [{note}]" if note else ""))


def _print_table(rows: dict[str, float]) -> None:
    if not rows:
        return
    width = max(len(k) for k in rows)
    print(f"{'metric'.ljust(width)}  value")
    for k, v in rows.items():
        text = f"{v:.3f}" if isinstance(v, float) else str(v)
        print(f"{k.ljust(width)}  {text}")
