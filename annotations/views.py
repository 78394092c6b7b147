"""API views for studies, volumes and imports (thin: validation in serializers, work in ingest/tasks)."""

import shutil
import tempfile
import uuid
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.uploadhandler import FileUploadHandler
from django.db.models import OuterRef, Prefetch, Q, Subquery
from django.http import FileResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from dla_web.audit import record
from dla_web.params import id_param
from dla_web.roles import IsAdmin, IsAnnotator
from dla_web.serializers import TaskRunSerializer

from . import dicomweb, export
from .models import LabelVersion, Study, Volume
from .serializers import (
    DicomWebErrorSerializer,
    DicomWebRetrieveSerializer,
    DicomWebSendSerializer,
    DicomWebSeriesSearchSerializer,
    DicomWebSeriesSerializer,
    DicomWebServerSerializer,
    DicomWebStudySearchSerializer,
    DicomWebStudySerializer,
    ImportSerializer,
    StudySerializer,
    VolumeSerializer,
)
from .tasks import dicomweb_send, ingest_upload

#: Room for the multipart framing around the files when the request's Content-Length is checked.
MULTIPART_OVERHEAD_BYTES = 1024 * 1024


class UploadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "upload_too_large"


def _too_large(size_text: str) -> UploadTooLarge:
    return UploadTooLarge(
        f"upload of {size_text} bytes exceeds the limit of {settings.DLA_MAX_UPLOAD_BYTES} bytes"
    )


class UploadLimitHandler(FileUploadHandler):
    """First upload handler of an import: counts the file bytes as they stream in and stops the request at the
    limit (DLA_MAX_UPLOAD_BYTES), so a body without an honest Content-Length is never stored whole."""

    def __init__(self, request=None, limit: int = 0):
        super().__init__(request)
        self.limit = limit
        self.received = 0

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > self.limit:
            raise _too_large(f"more than {self.limit}")
        return raw_data

    def file_complete(self, file_size):
        return None


class StudyViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.UpdateModelMixin, viewsets.GenericViewSet
):
    """Studies (annotators and admins). Filters: ``search`` (pseudonym), ``cohort``, ``has_dla``.
    Changing cohort, injection site or notes is for admins."""

    serializer_class = StudySerializer
    permission_classes = [IsAnnotator]

    def get_permissions(self):
        if self.action in ("update", "partial_update"):
            return [IsAdmin()]
        return super().get_permissions()

    def initial(self, request, *args, **kwargs):
        """For imports, enforce the size limit before anything reads the body (authentication's CSRF check
        would): refuse a Content-Length over the limit at once, and stream the rest through
        UploadLimitHandler."""
        if self.action == "import_files":
            limit = settings.DLA_MAX_UPLOAD_BYTES
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > limit + MULTIPART_OVERHEAD_BYTES:
                raise _too_large(str(length))
            request._request.upload_handlers.insert(0, UploadLimitHandler(request._request, limit=limit))
        super().initial(request, *args, **kwargs)

    def get_queryset(self):
        head = (
            LabelVersion.objects.filter(study=OuterRef("pk")).order_by("-number").values("review_status")[:1]
        )
        studies = Study.objects.annotate(head_review_status=Subquery(head)).prefetch_related(
            Prefetch("volumes", queryset=Volume.objects.only("id", "role", "shape", "study_id"))
        )
        params = self.request.query_params
        if params.get("search"):
            studies = studies.filter(
                Q(pseudonym__icontains=params["search"]) | Q(notes__icontains=params["search"])
            )
        if params.get("cohort"):
            studies = studies.filter(cohort=params["cohort"])
        if params.get("has_dla") in ("1", "true"):
            studies = studies.filter(volumes__role=Volume.Role.DLA).distinct()
        return studies

    @extend_schema(request={"multipart/form-data": ImportSerializer}, responses={202: TaskRunSerializer})
    @action(detail=False, methods=["post"], url_path="import", parser_classes=[MultiPartParser, FormParser])
    def import_files(self, request):
        """Upload DICOM/NIfTI files (or a zip) and import them as a study in the background."""
        total = sum(f.size for f in request.FILES.getlist("files"))
        if total > settings.DLA_MAX_UPLOAD_BYTES:
            return Response(
                {
                    "detail": f"upload of {total} bytes exceeds the limit of {settings.DLA_MAX_UPLOAD_BYTES} bytes"
                },
                status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )
        form = ImportSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        upload_id = uuid.uuid4().hex
        files_dir = Path(settings.UPLOAD_DIR) / upload_id / "files"
        files_dir.mkdir(parents=True)
        try:
            for index, upload in enumerate(data["files"]):
                # keep the user's file name (so messages name it) but never their path; one folder per file
                name = "".join(
                    c if c.isalnum() or c in "._-" else "_" for c in Path(upload.name or "file").name
                )
                target = files_dir / f"{index:06d}" / (name.lstrip(".")[-120:] or "file")
                target.parent.mkdir()
                with open(target, "wb") as out:
                    for chunk in upload.chunks():
                        out.write(chunk)
        except BaseException:
            shutil.rmtree(files_dir.parent, ignore_errors=True)
            raise
        run = ingest_upload.enqueue(
            user=request.user,
            params={
                "upload_id": upload_id,
                "study_id": data["study"].pk if data.get("study") else None,
                "pseudonym": data.get("pseudonym") or None,
                "role": data.get("role") or None,
                "cohort": data["cohort"],
                "injection_site": data["injection_site"],
            },
            message=f"import of {len(data['files'])} file(s) queued",
        )
        return Response(TaskRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


@extend_schema_view(
    list=extend_schema(parameters=[OpenApiParameter("study", int, description="only this study's")])
)
class VolumeViewSet(viewsets.ReadOnlyModelViewSet):
    """Volumes' metadata (geometry, HU range, checksum) and downloads as NIfTI or a DICOM series (zip)."""

    serializer_class = VolumeSerializer
    permission_classes = [IsAnnotator]

    def get_queryset(self):
        volumes = Volume.objects.select_related("study")
        study_id = id_param(self.request, "study")
        if study_id is not None:
            volumes = volumes.filter(study_id=study_id)
        if self.request.query_params.get("role"):
            volumes = volumes.filter(role=self.request.query_params["role"])
        return volumes

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "as", str, enum=["nifti", "dicom"], description="download format (default nifti)"
            )
        ],
        responses={(200, "application/octet-stream"): bytes},
    )
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        """Download the volume as NIfTI (.nii.gz) or as a zip of a DICOM series."""
        volume = self.get_object()
        fmt = request.query_params.get("as", "nifti")
        if fmt not in ("nifti", "dicom"):
            return Response({"detail": f"unknown format {fmt!r}; use nifti or dicom"}, status=400)
        work = Path(tempfile.mkdtemp(prefix="export-", dir=settings.VAR_DIR))
        try:
            path = export.export_volume(volume, fmt, work)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        handle = open(path, "rb")  # the open handle keeps the bytes readable after the folder is removed
        shutil.rmtree(work, ignore_errors=True)
        record(
            "export.volume", request=request, obj=volume.study, detail={"volume": volume.pk, "format": fmt}
        )
        return FileResponse(handle, as_attachment=True, filename=path.name)


def _dicomweb(call):
    """Run a DICOMweb call; its DicomWebError becomes a JSON error with the status it carries."""
    try:
        return call()
    except dicomweb.DicomWebError as exc:
        return Response({"detail": str(exc)}, status=exc.status)
    except ImproperlyConfigured as exc:
        return Response({"detail": f"DICOMweb configuration: {exc}"}, status=503)


_PACS_ERRORS = {
    502: OpenApiResponse(DicomWebErrorSerializer, description="the DICOMweb server is down or refused"),
    503: OpenApiResponse(DicomWebErrorSerializer, description="the DICOMweb configuration is malformed"),
    504: OpenApiResponse(DicomWebErrorSerializer, description="the DICOMweb server did not answer in time"),
}


class DicomWebViewSet(viewsets.ViewSet):
    """DICOMweb servers (admin-only): browse studies and series (QIDO-RS), retrieve series into the normal
    ingest task (WADO-RS), send a study's DLA series and an approved label version's SEG back (STOW-RS). Every
    search and transfer is audited (server, counts; never identifiers). UIDs and patient filters are sent in
    POST bodies, so they stay out of URLs and access logs."""

    permission_classes = [IsAdmin]
    lookup_field = "name"
    lookup_value_regex = r"[a-z0-9][a-z0-9_-]*"

    @extend_schema(responses={200: DicomWebServerSerializer(many=True), 503: _PACS_ERRORS[503]})
    def list(self, request):
        """The configured servers (DLA_DICOMWEB_SERVERS), without secrets."""
        return _dicomweb(lambda: Response([s.public() for s in dicomweb.configured_servers().values()]))

    @extend_schema(responses={200: DicomWebServerSerializer, 503: _PACS_ERRORS[503]})
    def retrieve(self, request, name=None):
        return _dicomweb(lambda: Response(dicomweb.get_server(name).public()))

    @extend_schema(
        request=DicomWebStudySearchSerializer,
        responses={200: DicomWebStudySerializer(many=True), **_PACS_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def studies(self, request, name=None):
        """QIDO-RS: the server's studies matching the filters (patient, date, modality, ...)."""
        form = DicomWebStudySearchSerializer(data=request.data)
        form.is_valid(raise_exception=True)

        def search():
            found = dicomweb.search_studies(name, form.qido_filters(), limit=form.validated_data["limit"])
            record(
                "dicomweb.search",
                request=request,
                detail={
                    "server": name,
                    "level": "studies",
                    "filters": sorted(form.qido_filters()),
                    "results": len(found),
                },
            )
            return Response(found)

        return _dicomweb(search)

    @extend_schema(
        request=DicomWebSeriesSearchSerializer,
        responses={200: DicomWebSeriesSerializer(many=True), **_PACS_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def series(self, request, name=None):
        """QIDO-RS: the series of one study (number, description, modality, instance count, imported as)."""
        form = DicomWebSeriesSearchSerializer(data=request.data)
        form.is_valid(raise_exception=True)

        def search():
            found = dicomweb.search_series(name, form.validated_data["study_uid"])
            record(
                "dicomweb.search",
                request=request,
                detail={"server": name, "level": "series", "results": len(found)},
            )
            return Response(found)

        return _dicomweb(search)

    @extend_schema(
        request=DicomWebRetrieveSerializer, responses={202: TaskRunSerializer, 503: _PACS_ERRORS[503]}
    )
    @action(detail=True, methods=["post"], url_path="retrieve")
    def fetch(self, request, name=None):
        """WADO-RS: retrieve the selected series (or the whole study) and import them with the normal ingest
        task (same checks, de-identification and progress)."""
        form = DicomWebRetrieveSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data

        def start():
            upload_id = dicomweb.prepare_retrieve(name, data["study_uid"], data["series_uids"])
            count = len(data["series_uids"]) or "all"
            run = ingest_upload.enqueue(
                user=request.user,
                params={
                    "upload_id": upload_id,
                    "study_id": data["study"].pk if data.get("study") else None,
                    "pseudonym": data.get("pseudonym") or None,
                    "role": data.get("role") or None,
                    "cohort": data["cohort"],
                    "injection_site": data["injection_site"],
                },
                message=f"retrieve of {count} series from {name} queued",
            )
            return Response(TaskRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)

        return _dicomweb(start)

    @extend_schema(request=DicomWebSendSerializer, responses={202: TaskRunSerializer, 503: _PACS_ERRORS[503]})
    @action(detail=True, methods=["post"])
    def send(self, request, name=None):
        """STOW-RS: send the study's DLA series and/or an approved label version's SEG back to the server, into
        the original study, referencing the original fill series."""
        form = DicomWebSendSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data

        def start():
            dicomweb.get_server(name)
            run = dicomweb_send.enqueue(
                user=request.user,
                target=data["study"],
                params={
                    "server": name,
                    "study_id": data["study"].pk,
                    "label_version_id": data["label_version"].pk if data.get("label_version") else None,
                    "include_dla": data["include_dla"],
                },
                message=f"sending results of {data['study'].pseudonym} to {name} queued",
            )
            return Response(TaskRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)

        return _dicomweb(start)
