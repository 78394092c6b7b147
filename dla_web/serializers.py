"""Serializers for task runs and users."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from rest_framework import serializers

from .models import TaskRun
from .roles import ROLES, roles_of


class TaskRunSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True)
    target = serializers.SerializerMethodField()
    duration_s = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = TaskRun
        fields = [
            "id",
            "kind",
            "queue",
            "state",
            "progress",
            "message",
            "log_tail",
            "error",
            "params",
            "result",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
            "duration_s",
            "attempts",
            "cancel_requested",
            "target",
        ]
        read_only_fields = fields

    def get_target(self, run) -> dict | None:
        if not run.target_type_id:
            return None
        return {"type": run.target_type.model, "id": run.target_id}


class SelfTestSerializer(serializers.Serializer):
    steps = serializers.IntegerField(min_value=1, max_value=1000, default=10)
    step_s = serializers.FloatField(min_value=0.0, max_value=10.0, default=0.2)
    fail_at = serializers.IntegerField(min_value=0, required=False, allow_null=True, default=None)


class CancelSerializer(serializers.Serializer):
    force = serializers.BooleanField(default=False)


class UserSerializer(serializers.ModelSerializer):
    roles = serializers.ListField(child=serializers.ChoiceField(choices=ROLES), required=False)

    class Meta:
        model = get_user_model()
        fields = ["id", "username", "first_name", "last_name", "email", "is_active", "roles"]
        read_only_fields = ["id", "username"]

    def to_representation(self, user):
        data = super().to_representation(user)
        data["roles"] = sorted(roles_of(user))
        return data

    def update(self, user, validated_data):
        roles = validated_data.pop("roles", None)
        user = super().update(user, validated_data)
        if roles is not None:
            user.groups.remove(*Group.objects.filter(name__in=ROLES))
            user.groups.add(*Group.objects.filter(name__in=roles))
            user._dla_roles = None
        return user


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        from .models import AuditEvent

        model = AuditEvent
        fields = ["id", "at", "action", "username", "ip", "object_type", "object_id", "object_repr", "detail"]
        read_only_fields = fields
