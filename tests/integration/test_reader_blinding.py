# ruff: noqa: F811
"""Blinding as a security property: fetch everything a reader can fetch (queue JSON, case JSON, answer and submit
responses, pages' HTML, the pages' scripts, image bytes and headers for A and B at several angles and windows)
and assert that nothing names the method, the study, the volumes, their files or the randomization seed, that
image sizes are equal, and that both images are shown with the same window, floored above the DSA's noise, so
their backgrounds are equally black. (test_blinding_attack.py measures what a classifier can still tell.)"""

import io
import re
import struct
import zlib

import numpy as np
import pytest
from django.test import Client
from PIL import Image

from tests.integration.reader_support import open_reader_study, reader_cases  # noqa: F401

pytestmark = pytest.mark.django_db

BRAND = re.compile(r"DLA\s*(<span>)?\s*Workbench(</span>)?")  # the product's name, the same on every page
CSRF = re.compile(r'(csrfmiddlewaretoken" value="|csrftoken=)[A-Za-z0-9]+')


def forbidden_terms(rs):
    terms = {"dsa", "dla", "subtract", "volume", "series", "sha256", ".npy", rs.randomization_seed}
    for case in rs.cases.select_related("study", "dsa_volume", "dla_volume"):
        terms |= {case.study.pseudonym, case.study.patient_pseudonym}
        for v in (case.dsa_volume, case.dla_volume):
            terms |= {v.sha256, v.file, v.file.rsplit("/", 1)[-1]}
            if v.series_description:
                terms.add(v.series_description)
    return {t.lower() for t in terms if t}


def assert_clean(text: str, terms, where: str):
    cleaned = CSRF.sub("", BRAND.sub("", text)).lower()
    leaks = sorted(t for t in terms if t in cleaned)
    assert not leaks, f"{where} reveals {leaks}"


def png_chunks(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks.append(kind.decode())
        pos += 12 + length
    return chunks


def test_nothing_a_reader_can_fetch_reveals_the_method(open_reader_study, users):
    from dla.render.mip import rotated_mip
    from dla.render.slices import WINDOW_PRESETS_HU, Window, floor_window, noise_floor_hu, window_to_uint8
    from reader_study import services
    from reader_study.models import Assignment

    rs = open_reader_study(n_cases=2, readers=("reader",))
    terms = forbidden_terms(rs)
    api = Client()
    api.force_login(users["reader"])
    seen = []  # (where, response)

    def get(url, **kw):
        r = api.get(url, **kw)
        assert r.status_code == 200, (url, r.status_code)
        seen.append((url, r))
        return r

    queue = get("/api/reading-studies/").json()
    get(f"/api/reading-studies/{rs.pk}/")
    tokens = [item["token"] for item in queue[0]["queue"]]
    sizes = set()
    for token in tokens:
        case = get(f"/api/reading/{token}/").json()
        bone = next(q["id"] for q in case["questions"] if q["key"] == "residual_bone")
        r = api.put(
            f"/api/reading/{token}/answers/",
            {"answers": [{"question": bone, "image": "A", "value": True}], "elapsed_s": 1},
            content_type="application/json",
        )
        seen.append(("answers", r))
        seen.append(
            (
                "time",
                api.post(f"/api/reading/{token}/time/", {"elapsed_s": 1}, content_type="application/json"),
            )
        )
        seen.append(("submit (400)", api.post(f"/api/reading/{token}/submit/")))
        html = get(f"/reading/{token}/")
        for script in re.findall(r'src="(/static/[^"]+)"', html.content.decode()):
            seen.append((script, api.get(script)))
        asg = Assignment.objects.get(token=token)
        frames = {}
        for image in ("A", "B"):
            for angle in (0, 90, 170, 275):
                for window in ("vessel", "wide"):
                    r = get(f"/api/reading/{token}/image/{image}/?angle={angle}&window={window}")
                    assert r["Content-Type"] == "image/png"
                    assert png_chunks(r.content) == ["IHDR", "IDAT", "IEND"]  # no text/time/metadata chunks
                    assert "ETag" not in r and "Content-Disposition" not in r and "Last-Modified" not in r
                    sizes.add(len(r.content))
                    frames[(image, angle, window)] = np.asarray(Image.open(io.BytesIO(r.content)))
        # the frames really are the two methods' MIPs, mapped as the assignment says, both shown with one
        # window whose floor lies above the DSA's noise (all checked independently: MIPs rendered here)
        dsa = asg.case.dsa_volume
        dsa_cine = np.stack(
            [
                np.round(rotated_mip(dsa.array(), dsa.spacing_mm, 10.0 * i, out_size=services.FRAME_SIZE))
                for i in range(services.N_ANGLES)
            ]
        )
        floor = noise_floor_hu(dsa_cine)
        assert abs(floor - asg.case.display_floor_hu) <= 1.0
        window = floor_window(Window(*WINDOW_PRESETS_HU["vessel"]), asg.case.display_floor_hu)
        for image in ("A", "B"):
            volume = asg.case.volume(asg.method_of(image))
            expected = window_to_uint8(
                rotated_mip(volume.array(), volume.spacing_mm, 90.0, out_size=services.FRAME_SIZE), window
            )
            assert np.abs(frames[(image, 90, "vessel")].astype(int) - expected).max() <= 1
            # black backgrounds: most pixels are 0 and none sits at the grey of 0 HU in the plain window
            shown = frames[(image, 90, "vessel")]
            assert np.mean(shown == 0) > 0.9
            assert (
                np.mean(shown == window_to_uint8(np.zeros(1), Window(*WINDOW_PRESETS_HU["vessel"]))[0]) < 0.01
            )
        assert not np.array_equal(frames[("A", 0, "vessel")], frames[("B", 0, "vessel")])
    # every frame of every image has exactly the same byte size
    assert len(sizes) == 1, sizes

    get("/reading/")
    get("/")
    for where, r in seen:
        raw = b"".join(r.streaming_content) if r.streaming else r.content
        body = raw.decode("utf-8", errors="replace") if not r["Content-Type"].startswith("image/") else ""
        assert_clean(body, terms, f"{where} body")
        headers = "\n".join(f"{k}: {v}" for k, v in r.items())
        assert_clean(headers, terms, f"{where} headers")
        assert_clean(where, terms, f"URL {where}")


def test_tokens_are_opaque_and_unique(open_reader_study):
    from reader_study.models import Assignment, new_token

    open_reader_study(n_cases=3, readers=("reader", "r2"))
    tokens = list(Assignment.objects.values_list("token", flat=True))
    assert len(set(tokens)) == len(tokens) == 6
    many = [new_token() for _ in range(3000)]
    assert len(set(many)) == len(many)
    assert all(len(t) >= 20 and "dla" not in t.lower() and "dsa" not in t.lower() for t in many)


def test_fixed_size_png_length_does_not_depend_on_content():
    from reader_study.services import fixed_size_png

    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    flat = np.zeros((64, 64), dtype=np.uint8)
    a, b = fixed_size_png(noisy), fixed_size_png(flat)
    assert len(a) == len(b)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(a))), noisy)
