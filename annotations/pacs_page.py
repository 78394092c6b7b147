"""The PACS page ``/pacs/`` (admins): the DICOMweb servers configured in the environment (name, URL, auth kind and
user name, never a password or token), a QIDO-RS browser of their studies and series, a retrieve of the selected
series into the normal ingest task (a new study with a pseudonym, or an existing study with a role) followed by
the task's progress bar, and the STOW-RS send-back of a study's DLA series and approved label versions.

The page is rendered on the server with what it needs to start (servers, studies, roles, approved versions);
browsing, retrieving and sending go through the admin-only ``/api/dicomweb/`` API from
``frontend/static/frontend/js/pacs.js``. Admins only, like that API: QIDO answers carry the PACS's patient names
and IDs and the pseudonym map is admin-only, so annotators import by upload (``/import/``) instead.
"""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.shortcuts import render

from dla_web.roles import is_admin

from . import dicomweb
from .models import LabelVersion, Study, Volume

#: Roles a retrieved series may be given when it is added to an existing study (the API's choices).
RETRIEVE_ROLES = (Volume.Role.FILL, Volume.Role.MASK, Volume.Role.SUBTRACTED, Volume.Role.OTHER)


@login_required
def pacs_page(request):
    if not is_admin(request.user):
        raise PermissionDenied(
            "Only admins may browse and retrieve from the PACS (its answers carry patient names and IDs); "
            "annotators import files on the Import page."
        )
    config_error = ""
    try:
        servers = [server.public() for server in dicomweb.configured_servers().values()]
    except ImproperlyConfigured as exc:
        servers, config_error = [], str(exc)
    studies = list(Study.objects.order_by("pseudonym").values_list("pk", "pseudonym"))
    approved = {}
    for version in (
        LabelVersion.objects.filter(review_status=LabelVersion.Review.APPROVED)
        .order_by("study_id", "-number")
        .values("pk", "study_id", "number", "message")
    ):
        approved.setdefault(str(version["study_id"]), []).append(
            {"id": version["pk"], "number": version["number"], "message": version["message"][:80]}
        )
    with_dla = set(Volume.objects.filter(role=Volume.Role.DLA).values_list("study_id", flat=True))
    return render(
        request,
        "annotations/pacs.html",
        {
            "servers": servers,
            "config_error": config_error,
            "studies": studies,
            "send_studies": [
                {"id": pk, "pseudonym": name, "has_dla": pk in with_dla} for pk, name in studies
            ],
            "approved_versions": approved,
            "roles_choices": [(r.value, r.label) for r in RETRIEVE_ROLES],
            "cohorts": Study.Cohort.choices,
            "injections": Study.Injection.choices,
        },
    )
