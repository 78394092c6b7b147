"""Rendering API for the viewer: slices of volumes (raw int16 or windowed PNG), label slices of drafts and
versions (raw uint8 class ids), MIPs at any angle (PNG of a frame of the MIP cache) and the cine of precomputed
angles. Thin: the numeric work is in ``dla.render``; frames, their cache and their display in
``annotations.mip_cache``.

Volumes and label versions are immutable, so their responses carry an ETag derived from the content's sha256
and ``Cache-Control: immutable``; a draft's slices carry an ETag of its revision and must be revalidated.
Raw slices are little-endian C-order arrays with their shape in ``X-Shape`` ("rows,cols") and dtype in
``X-Dtype``. Bad parameters give a 400 ``{"detail": ...}`` naming the parameter and its limits: MIP ``size``
is 16..``MAX_MIP_SIZE_PX`` (512), ``tilt`` -90..90, so no request renders more than a bounded grid.
"""

import numpy as np
from django.contrib.contenttypes.models import ContentType
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response
from rest_framework.settings import api_settings

from dla.classes import CLASS_NAMES, VESSEL
from dla.render.mip import MAX_MIP_SIZE_PX, MIN_MIP_SIZE_PX
from dla.render.slices import WINDOW_PRESETS_HU, RenderError, Window, encode_png, slice_2d, window_to_uint8
from dla_web.models import TaskRun
from dla_web.roles import IsAnnotator
from dla_web.serializers import TaskRunSerializer

from . import labels as label_rules
from . import mip_cache
from .models import Draft, LabelVersion, Volume

IMMUTABLE = "private, max-age=31536000, immutable"
REVALIDATE = "private, no-cache"
DEFAULT_PRESET = {Volume.Role.SUBTRACTED: "dsa"}


class RenderParamError(RenderError):
    """A query parameter of a rendering request is missing or malformed (the message names it)."""


# ------------------------------------------------------------------------------------------------ params


class _SettingsWithoutFormatOverride:
    URL_FORMAT_OVERRIDE = None

    def __getattr__(self, name):
        return getattr(api_settings, name)


class FormatIsOurs(DefaultContentNegotiation):
    """``?format=raw|png`` picks the image encoding here, not a DRF renderer (which would 404 on 'raw')."""

    settings = _SettingsWithoutFormatOverride()


def _int(params, name: str, default=None, lo=None, hi=None) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        if default is None:
            raise RenderParamError(f"{name}: this query parameter is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise RenderParamError(f"{name} must be an integer, got {raw!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise RenderParamError(f"{name}={value} is outside {lo}..{hi}")
    return value


def _float(params, name: str, default: float) -> float:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise RenderParamError(f"{name} must be a number, got {raw!r}")
    if not np.isfinite(value):
        raise RenderParamError(f"{name} must be finite, got {raw!r}")
    return value


def _window(params, default_preset: str = "vessel") -> Window:
    if params.get("center") not in (None, "") or params.get("width") not in (None, ""):
        return Window.parse(params.get("center"), params.get("width"))
    return Window.parse(None, None, params.get("preset") or default_preset)


def _view(params) -> mip_cache.View:
    """The MIP view of a request: ``angle``, ``tilt`` (-90..90) and ``size`` (16..MAX_MIP_SIZE_PX)."""
    angle = _float(params, "angle", 0.0)
    tilt = _float(params, "tilt", 0.0)
    size = _int(params, "size", mip_cache.CINE_SIZE, MIN_MIP_SIZE_PX, MAX_MIP_SIZE_PX)
    return mip_cache.View.of(angle, tilt, size)


def _axis_index(params, shape) -> tuple[str, int]:
    axis = params.get("axis", "z")
    if axis not in ("z", "y", "x"):
        raise RenderParamError(f"unknown axis {axis!r}; use z, y or x")
    n = shape["zyx".index(axis)]
    index = _int(params, "index", default=None if n != 1 else 0)
    if not 0 <= index < n:
        raise RenderParamError(f"slice index {index} is outside 0..{n - 1} along {axis}")
    return axis, index


def _quote(tag: str) -> str:
    return f'"{tag}"'


def _not_modified(request, etag: str) -> bool:
    header = request.headers.get("If-None-Match", "")
    return any(part.strip() in (etag, f"W/{etag}", "*") for part in header.split(","))


def _respond(request, body_fn, *, content_type: str, etag: str, cache: str, headers: dict | None = None):
    """An HttpResponse with ETag and Cache-Control, or a 304 when the client's copy matches."""
    etag = _quote(etag)
    if _not_modified(request, etag):
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(body_fn(), content_type=content_type)
        for key, value in (headers or {}).items():
            response[key] = value
    response["ETag"] = etag
    response["Cache-Control"] = cache
    response["Vary"] = "Cookie, Authorization"
    return response


def _raw(array: np.ndarray, dtype: str) -> tuple[bytes, dict]:
    data = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
    return data.tobytes(), {"X-Shape": f"{data.shape[0]},{data.shape[1]}", "X-Dtype": dtype}


SLICE_PARAMS = [
    OpenApiParameter("axis", str, enum=["z", "y", "x"], description="slice axis (default z, axial)"),
    OpenApiParameter("index", int, description="slice index along the axis"),
]
WINDOW_PARAMS = [
    OpenApiParameter("preset", str, enum=list(WINDOW_PRESETS_HU), description="window preset"),
    OpenApiParameter("center", float, description="window centre in HU (with width)"),
    OpenApiParameter("width", float, description="window width in HU (with center)"),
]
MIP_PARAMS = [
    OpenApiParameter("angle", float, description="degrees about the vertical axis (0 = frontal)"),
    OpenApiParameter("tilt", float, description="degrees about the horizontal axis, -90..90"),
    OpenApiParameter(
        "size", int, description=f"image size in pixels, {MIN_MIP_SIZE_PX}..{MAX_MIP_SIZE_PX} (default 256)"
    ),
]
BINARY = {(200, "application/octet-stream"): bytes, (200, "image/png"): bytes}


# ------------------------------------------------------------------------------------------------ volumes


class VolumeRenderViewSet(viewsets.GenericViewSet):
    """Slices, MIPs and the cine of a volume (annotators and admins)."""

    permission_classes = [IsAnnotator]
    content_negotiation_class = FormatIsOurs
    queryset = Volume.objects.all()
    serializer_class = None

    @extend_schema(
        parameters=[
            *SLICE_PARAMS,
            OpenApiParameter("format", str, enum=["raw", "png"], description="raw int16 or windowed PNG"),
            *WINDOW_PARAMS,
        ],
        responses=BINARY,
    )
    @action(detail=True, methods=["get"])
    def slice(self, request, pk=None):
        """One slice: raw little-endian voxels (``X-Shape`` rows,cols; ``X-Dtype``) or a windowed 8-bit PNG."""
        volume = self.get_object()
        params = request.query_params
        axis, index = _axis_index(params, volume.shape)
        fmt = params.get("format", "raw")
        if fmt not in ("raw", "png"):
            raise RenderParamError(f"unknown format {fmt!r}; use raw or png")

        def plane():
            return slice_2d(volume.array(), axis, index)

        if fmt == "raw":
            holder = {}

            def body():
                data, holder["headers"] = _raw(plane(), volume.dtype)
                return data

            response = _respond(
                request,
                body,
                content_type="application/octet-stream",
                etag=f"{volume.sha256[:32]}-{axis}{index}-raw",
                cache=IMMUTABLE,
            )
            if response.status_code == 200:
                for key, value in holder["headers"].items():
                    response[key] = value
            else:
                response["X-Shape"] = ",".join(
                    str(n) for n, a in zip(volume.shape, "zyx", strict=True) if a != axis
                )
                response["X-Dtype"] = volume.dtype
            return response
        window = _window(params, DEFAULT_PRESET.get(volume.role, "vessel"))
        return _respond(
            request,
            lambda: encode_png(window_to_uint8(plane(), window)),
            content_type="image/png",
            etag=f"{volume.sha256[:32]}-{axis}{index}-c{window.center_hu:g}-w{window.width_hu:g}",
            cache=IMMUTABLE,
        )

    @extend_schema(parameters=[*MIP_PARAMS, *WINDOW_PARAMS], responses={(200, "image/png"): bytes})
    @action(detail=True, methods=["get"])
    def mip(self, request, pk=None):
        """A windowed MIP at ``angle``/``tilt`` (a frame of the MIP cache; the cine angles are precomputed)."""
        volume = self.get_object()
        params = request.query_params
        view = _view(params)
        window = _window(params, DEFAULT_PRESET.get(volume.role, "vessel"))
        source = mip_cache.volume_source(volume)
        etag = mip_cache.image_etag(mip_cache.frame_key(source, view), window)
        if _not_modified(request, _quote(etag)):
            return _respond(request, lambda: b"", content_type="image/png", etag=etag, cache=IMMUTABLE)
        frame = mip_cache.frame(source, view)
        return _respond(
            request,
            lambda: mip_cache.image_png(frame.array, window),
            content_type="image/png",
            etag=etag,
            cache=IMMUTABLE,
            headers={"X-Cache": "hit" if frame.hit else "miss"},
        )

    @extend_schema(
        methods=["GET"],
        parameters=[OpenApiParameter("size", int), *WINDOW_PARAMS],
        responses=dict,
        description="Which cine angles are cached, with the latest cine task run.",
    )
    @extend_schema(methods=["POST"], request=dict, responses={202: TaskRunSerializer})
    @action(detail=True, methods=["get", "post"])
    def cine(self, request, pk=None):
        """GET: the cine's angles, which are cached, and the latest cine run. POST ``{"size"}``: compute the
        missing angles in the background (202 with the task run). Frames are stored before windowing, so one
        cine serves every window (``window`` is echoed for the client)."""
        volume = self.get_object()
        data = request.data if request.method == "POST" else request.query_params
        size = _int(data, "size", mip_cache.CINE_SIZE, MIN_MIP_SIZE_PX, MAX_MIP_SIZE_PX)
        window = _window(data, DEFAULT_PRESET.get(volume.role, "vessel"))
        if request.method == "POST":
            from .tasks import compute_cine

            run = compute_cine.enqueue(
                user=request.user,
                target=volume,
                params={"volume_id": volume.pk, "size": size},
                message="cine queued",
            )
            return Response(TaskRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)
        angles = mip_cache.cine_angles()
        cached = mip_cache.cached_angles(mip_cache.volume_source(volume), size=size)
        run = (
            TaskRun.objects.filter(
                kind="cine",
                target_type=ContentType.objects.get_for_model(Volume),
                target_id=str(volume.pk),
            )
            .order_by("-created_at", "-id")
            .first()
        )
        return Response(
            {
                "volume": volume.pk,
                "angles": angles,
                "cached": cached,
                "complete": len(cached) == len(angles),
                "window": {"center": window.center_hu, "width": window.width_hu},
                "size": size,
                "run": TaskRunSerializer(run).data if run else None,
            }
        )


# ------------------------------------------------------------------------------------------------ labels


def _label_slice_response(request, labels: np.ndarray, *, etag: str, cache: str):
    axis, index = _axis_index(request.query_params, list(labels.shape))
    holder = {}

    def body():
        data, holder["headers"] = _raw(slice_2d(labels, axis, index), "uint8")
        return data

    response = _respond(request, body, content_type="application/octet-stream", etag=etag, cache=cache)
    if response.status_code == 200:
        for key, value in holder["headers"].items():
            response[key] = value
    return response


def _class_param(params) -> int:
    class_id = _int(params, "label", VESSEL, 1, 3)
    if class_id not in CLASS_NAMES:
        raise RenderParamError(f"label {class_id} is not a class id")
    return class_id


def _label_mip(request, source: mip_cache.Source, *, cache: str):
    """The class MIP PNG of a label source (a version's frames are cached, a draft's rendered per request)."""
    view = _view(request.query_params)
    key = mip_cache.frame_key(source, view)
    if _not_modified(request, _quote(key)):
        return _respond(request, lambda: b"", content_type="image/png", etag=key, cache=cache)
    frame = mip_cache.frame(source, view)
    return _respond(
        request,
        lambda: mip_cache.label_png(frame.array, source.class_id),
        content_type="image/png",
        etag=key,
        cache=cache,
    )


LABEL_MIP_PARAMS = [*MIP_PARAMS, OpenApiParameter("label", int, description="class id (default 1, vessel)")]


class DraftRenderViewSet(viewsets.GenericViewSet):
    """Label slices and class MIPs of a draft (anyone who may see drafts: annotators and admins)."""

    permission_classes = [IsAnnotator]
    queryset = Draft.objects.select_related("study")
    serializer_class = None

    @extend_schema(parameters=SLICE_PARAMS, responses={(200, "application/octet-stream"): bytes})
    @action(detail=True, methods=["get"])
    def slice(self, request, pk=None):
        """The draft's class ids on one slice (raw uint8, ``X-Shape``); ETag = draft revision."""
        draft = self.get_object()
        etag = f"draft{draft.pk}-r{draft.revision}-{request.query_params.get('axis', 'z')}"
        etag += f"{request.query_params.get('index', '')}"
        if _not_modified(request, _quote(etag)):
            return _respond(
                request, lambda: b"", content_type="application/octet-stream", etag=etag, cache=REVALIDATE
            )
        return _label_slice_response(request, label_rules.draft_array(draft), etag=etag, cache=REVALIDATE)

    @extend_schema(parameters=LABEL_MIP_PARAMS, responses={(200, "image/png"): bytes})
    @action(detail=True, methods=["get"])
    def mip(self, request, pk=None):
        """RGBA MIP of one class of the draft (e.g. the vessel label over the volume's MIP)."""
        draft = self.get_object()
        source = mip_cache.draft_source(draft, _class_param(request.query_params))
        return _label_mip(request, source, cache=REVALIDATE)


class LabelVersionRenderViewSet(viewsets.GenericViewSet):
    """Label slices and class MIPs of an immutable label version (annotators and admins)."""

    permission_classes = [IsAnnotator]
    queryset = LabelVersion.objects.select_related("study")
    serializer_class = None

    def _labels(self, version: LabelVersion) -> np.ndarray:
        return mip_cache.decoded_labels(version.sha256, lambda: label_rules.version_labels(version))

    @extend_schema(parameters=SLICE_PARAMS, responses={(200, "application/octet-stream"): bytes})
    @action(detail=True, methods=["get"])
    def slice(self, request, pk=None):
        """The version's class ids on one slice (raw uint8, ``X-Shape``); immutable."""
        version = self.get_object()
        params = request.query_params
        etag = f"{version.sha256[:32]}-{params.get('axis', 'z')}{params.get('index', '')}-labels"
        if _not_modified(request, _quote(etag)):
            return _respond(
                request, lambda: b"", content_type="application/octet-stream", etag=etag, cache=IMMUTABLE
            )
        return _label_slice_response(request, self._labels(version), etag=etag, cache=IMMUTABLE)

    @extend_schema(parameters=LABEL_MIP_PARAMS, responses={(200, "image/png"): bytes})
    @action(detail=True, methods=["get"])
    def mip(self, request, pk=None):
        """RGBA MIP of one class of the version (cached like the volume cine)."""
        version = self.get_object()
        source = mip_cache.version_source(version, _class_param(request.query_params))
        return _label_mip(request, source, cache=IMMUTABLE)
