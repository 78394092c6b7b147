"""Helpers shared by the reader-study tests: phantom studies with a DLA volume, and a ready reader study."""

import numpy as np
import pytest

SHAPE = (24, 32, 32)


def add_dla(study):
    """A DLA volume for a phantom study: fill HU where the truth is vessel, -1000 elsewhere (no model needed)."""
    from annotations.models import Volume
    from dla.classes import VESSEL

    fill = study.volume("fill")
    truth = study.volume("truth").array()
    dla = np.where(truth == VESSEL, fill.array(), -1000).astype(np.int16)
    return Volume.create_from_array(
        study=study,
        role="dla",
        array=dla,
        spacing_mm=fill.spacing_mm,
        affine_lps=fill.affine_lps,
        source="test",
        series_description="3D-DLA test series",
    )


@pytest.fixture
def reader_cases(phantom_study):
    """``reader_cases(n)`` -> n phantom studies, each with subtracted and DLA volumes."""

    def make(n: int, first_seed: int = 100):
        studies = []
        for i in range(n):
            s = phantom_study(seed=first_seed + i, shape=SHAPE)
            add_dla(s)
            studies.append(s)
        return studies

    return make


@pytest.fixture
def open_reader_study(reader_cases, users, make_user):
    """``open_reader_study(n_cases=3, readers=("reader",), **fields)`` -> an open ReaderStudy (API-free setup)."""
    from reader_study import services
    from reader_study.models import ReaderStudy

    def make(n_cases=3, readers=("reader",), mode="side_by_side", seed=7, **fields):
        rs = ReaderStudy.objects.create(
            title="Bone artifacts", mode=mode, seed=seed, created_by=users["admin"], **fields
        )
        services.add_default_questions(rs)
        services.add_cases(rs, [s.pk for s in reader_cases(n_cases)])
        user_ids = []
        for name in readers:
            user = users.get(name) or make_user(name, "Reader")
            user_ids.append(user.pk)
        services.add_readers(rs, user_ids)
        return services.open_study(rs)

    return make
