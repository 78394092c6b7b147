"""Peak resident memory of this process over one stretch of work, for the cost figures of runs: Linux resets the
high-water mark when "5" is written to ``/proc/self/clear_refs`` and reports it as ``VmHWM`` in
``/proc/self/status``. Where either is unavailable, ``reset_peak_rss`` returns False and ``peak_rss_gb`` None
(the figure is then "not recorded", never a guess). Child processes (DDP ranks) are not counted."""

from pathlib import Path

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")


def reset_peak_rss() -> bool:
    """Start a new peak: the high-water mark drops to the current resident size. False where not supported."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_gb() -> float | None:
    """The process's peak resident memory since the last reset (or its start), GiB; None where not reported."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2  # kB -> GiB
    except (OSError, ValueError, IndexError):
        return None
    return None
