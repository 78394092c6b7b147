"""Helpers shared by the reader-study tests: phantom studies with a DLA volume, and a ready reader study."""

import numpy as np
import pytest

SHAPE = (24, 32, 32)


def add_dla(study):
    """A DLA volume for a phantom study as inference makes it (``dla.model.dense.dla_volume``: fill HU where
    the class is vessel, ``DLA_BACKGROUND_HU`` = 0 HU elsewhere), with the truth as the class map."""
    from annotations.models import Volume
    from dla.model.dense import dla_volume

    fill = study.volume("fill")
    dla = dla_volume(np.asarray(fill.array()), np.asarray(study.volume("truth").array()))
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
    """``open_reader_study(n_cases=3, readers=("reader",), **fields)`` -> an open ReaderStudy (API-free setup;
    ``services.open_study`` renders the frames the study needs in this process)."""
    from reader_study import services
    from reader_study.models import ReaderStudy

    def make(n_cases=3, readers=("reader",), mode="side_by_side", **fields):
        rs = ReaderStudy.objects.create(
            title="Bone artifacts", mode=mode, created_by=users["admin"], **fields
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
