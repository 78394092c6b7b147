"""API views of the project package: task runs (list, read, cancel, worker self-test), users and the caller."""

import math

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from .audit import record
from .auth import issue_token, revoke_tokens
from .models import ApiToken, AuditEvent, TaskRun
from .roles import ROLES, HasAnyRole, IsAdmin, check_keeps_an_admin, is_admin
from .security import LoginRateThrottle, locked_until, lockout_message, retry_after
from .serializers import (
    AuditEventSerializer,
    CancelSerializer,
    SelfTestSerializer,
    TaskRunSerializer,
    UserSerializer,
)
from .tasks import request_cancel, selftest


class TaskRunViewSet(viewsets.ReadOnlyModelViewSet):
    """Long jobs and their progress. Admins see every run; other users see the runs they started."""

    serializer_class = TaskRunSerializer
    permission_classes = [HasAnyRole]

    def get_queryset(self):
        runs = TaskRun.objects.select_related("created_by", "target_type")
        if not is_admin(self.request.user):
            runs = runs.filter(created_by=self.request.user)
        params = self.request.query_params
        if params.get("state"):
            runs = runs.filter(state=params["state"])
        if params.get("kind"):
            runs = runs.filter(kind=params["kind"])
        if params.get("exclude_kind"):
            runs = runs.exclude(kind__in=params["exclude_kind"].split(","))
        if params.get("active") in ("1", "true"):
            runs = runs.filter(state__in=[TaskRun.State.QUEUED, TaskRun.State.RUNNING])
        return runs

    @extend_schema(request=CancelSerializer, responses=TaskRunSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel a run: queued runs stop at once, running ones at their next progress check
        (``force: true`` terminates the worker child)."""
        run = self.get_object()
        options = CancelSerializer(data=request.data)
        options.is_valid(raise_exception=True)
        if run.is_terminal:
            return Response(
                {"detail": f"Task run {run.pk} already ended ({run.state}); nothing to cancel."},
                status=status.HTTP_409_CONFLICT,
            )
        run = request_cancel(run, force=options.validated_data["force"])
        return Response(TaskRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=SelfTestSerializer, responses={202: TaskRunSerializer})
    @action(detail=False, methods=["post"], permission_classes=[IsAdmin])
    def selftest(self, request):
        """Start a worker self-test run (admins): proves that a worker picks up and finishes tasks."""
        params = SelfTestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        run = selftest.enqueue(user=request.user, params=params.validated_data, message="self-test queued")
        return Response(TaskRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class UserViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.UpdateModelMixin, viewsets.GenericViewSet
):
    """User management for admins: list users, activate/deactivate, assign roles (each change is audited with
    before/after and revokes the user's API keys: ``dla_web.auth``)."""

    serializer_class = UserSerializer
    permission_classes = [IsAdmin]
    queryset = get_user_model().objects.order_by("username").prefetch_related("groups")

    def perform_update(self, serializer):
        """Refuses (400) taking the Admin role or the active flag from the last active admin."""
        user, data = serializer.instance, serializer.validated_data
        roles = data["roles"] if "roles" in data else user.groups.values_list("name", flat=True)
        check_keeps_an_admin(
            user,
            is_active=data.get("is_active", user.is_active),
            is_superuser=user.is_superuser,
            roles=[r for r in roles if r in ROLES],
        )
        serializer.save()


class MeView(APIView):
    """The signed-in user and their roles."""

    @extend_schema(responses=UserSerializer)
    def get(self, request):
        return Response(UserSerializer(request.user).data)


_DETAIL = inline_serializer("Detail", {"detail": serializers.CharField()})


class TokenView(APIView):
    """API keys: POST with username and password issues a new key, shown once (only its hash is stored; it
    expires after DLA_API_TOKEN_DAYS); DELETE revokes the key the request was made with (or, from a browser
    session, all your keys). POST is throttled per client address (``DLA_LOGIN_RATE``: 429 with Retry-After),
    and a locked-out account (too many failed logins) gets a 429 saying until when it is locked."""

    permission_classes = []

    def get_throttles(self):
        return [LoginRateThrottle()] if self.request.method == "POST" else []

    def throttled(self, request, wait):
        raise exceptions.Throttled(
            wait=math.ceil(wait) if wait is not None else None,
            detail="Too many login attempts from your address.",
        )

    @extend_schema(
        request=inline_serializer(
            "TokenRequest", {"username": serializers.CharField(), "password": serializers.CharField()}
        ),
        responses={
            200: inline_serializer(
                "TokenIssued", {"token": serializers.CharField(), "expires_at": serializers.DateTimeField()}
            ),
            400: _DETAIL,
            401: _DETAIL,
            429: _DETAIL,
        },
    )
    def post(self, request):
        from django.contrib.auth import authenticate

        data = request.data
        if not isinstance(data, dict) or not all(
            isinstance(data.get(k), str) for k in ("username", "password")
        ):
            return Response({"detail": "send a JSON object with username and password as text"}, status=400)
        if any("\x00" in data[k] for k in ("username", "password")):
            return Response(
                {"detail": "send username and password as text without NUL characters"}, status=400
            )
        user = authenticate(request, username=data["username"], password=data["password"])
        if user is None and getattr(request, "axes_locked_out", False):
            until = locked_until(request, data["username"])
            return Response(
                {"detail": lockout_message(until)},
                status=status.HTTP_429_TOO_MANY_REQUESTS,
                headers={"Retry-After": retry_after(until)},
            )
        if user is None:
            return Response(
                {"detail": "Unknown username or wrong password."}, status=status.HTTP_401_UNAUTHORIZED
            )
        key, token = issue_token(user, request=request)
        return Response({"token": key, "expires_at": token.expires_at})

    @extend_schema(request=None, responses={204: None})
    def delete(self, request):
        if not request.user.is_authenticated:
            return Response(
                {"detail": "Authentication credentials were not provided."},
                status=status.HTTP_401_UNAUTHORIZED,
            )
        used = getattr(request, "api_token", None)
        tokens = ApiToken.objects.filter(pk=used.pk) if used is not None else None
        revoke_tokens(request.user, "revoked by its owner", request=request, tokens=tokens)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    """The append-only audit log (admins). Filters: ``action`` (prefix), ``username``, ``object_type``,
    ``object_id``. ``export/`` downloads the filtered log as CSV."""

    serializer_class = AuditEventSerializer
    permission_classes = [IsAdmin]

    def get_queryset(self):
        events = AuditEvent.objects.all()
        params = self.request.query_params
        if params.get("action"):
            events = events.filter(action__startswith=params["action"])
        for field in ("username", "object_type", "object_id"):
            if params.get(field):
                events = events.filter(**{field: params[field]})
        return events

    @extend_schema(responses={(200, "text/csv"): bytes})
    @action(detail=False, methods=["get"])
    def export(self, request):
        from django.http import StreamingHttpResponse

        from .csv_export import writer as csv_writer

        class Echo:
            def write(self, value):
                return value

        fields = AuditEventSerializer.Meta.fields
        writer = csv_writer(Echo())

        def rows():
            yield writer.writerow(fields)
            for event in self.get_queryset().iterator(chunk_size=2000):
                yield writer.writerow([getattr(event, f) for f in fields])

        record("export.audit", request=request)
        response = StreamingHttpResponse(rows(), content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="audit-log.csv"'
        return response
