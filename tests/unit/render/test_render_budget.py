"""Memory budget of one MIP (DESIGN.md section 5: no request may take more than 512 MB extra): the worst
parameters ``rotated_mip`` accepts (largest size, tilted and upright, a whole 400x512x512 head and a label class)
are rendered in a fresh process whose peak resident memory is measured around each step (the kernel's VmHWM,
reset before the step), so torch's allocations count too. No timing asserts."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dla.render.mip import MAX_MIP_SIZE_PX

BUDGET_BYTES = 256 * 2**20  # what dla.render.mip promises for one MIP: half the per-request budget

SCRIPT = r"""
import json
import numpy as np
from dla.classes import VESSEL
from dla.render.mip import MAX_MIP_SIZE_PX, prepare_mip_volume, rotated_mip


def kb(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def extra_bytes(step):
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset the peak (VmHWM) to the current resident size
    before = kb("VmRSS")
    out = step()
    return out, (kb("VmHWM") - before) * 1024


rotated_mip(np.zeros((8, 8, 8), np.int16), (1.0, 1.0, 1.0), 0.0, tilt_deg=10.0, out_size=16)  # warm torch up
# a whole 400x512x512 head and label map without their 200 MB / 100 MB: views of one stored plane each
plane = np.random.default_rng(0).integers(-1000, 2000, (1, 512, 512)).astype(np.int16)
head = np.broadcast_to(plane, (400, 512, 512))
labels = np.broadcast_to((plane > 1500).astype(np.uint8) * VESSEL, (400, 512, 512))
spacing = (0.5, 0.45, 0.45)
results = {}
prepared, results["prepare head"] = extra_bytes(lambda: prepare_mip_volume(head, spacing))
for tilt in (0.0, 45.0, 90.0):
    image, results[f"tilt {tilt:g}"] = extra_bytes(
        lambda: rotated_mip(prepared, angle_deg=33.0, tilt_deg=tilt, out_size=MAX_MIP_SIZE_PX)
    )
    assert image.shape == (MAX_MIP_SIZE_PX, MAX_MIP_SIZE_PX)
del prepared
_, results["label class, tilt 45"] = extra_bytes(
    lambda: rotated_mip(
        prepare_mip_volume(labels, spacing, class_id=VESSEL), angle_deg=33.0, tilt_deg=45.0,
        out_size=MAX_MIP_SIZE_PX,
    )
)
print("RESULT" + json.dumps(results))
"""


def _peak_reset_available() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _peak_reset_available(), reason="needs Linux's /proc/self/clear_refs to reset VmHWM")
def test_worst_mip_stays_within_its_memory_budget():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT"))[6:])
    print({step: f"{n / 2**20:.0f} MB" for step, n in results.items()})
    assert set(results) == {"prepare head", "tilt 0", "tilt 45", "tilt 90", "label class, tilt 45"}
    for step, extra in results.items():
        assert extra <= BUDGET_BYTES, (
            f"{step} took {extra / 2**20:.0f} MB beyond its input at {MAX_MIP_SIZE_PX}px"
        )
