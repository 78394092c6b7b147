"""Roles (Annotator, Reader, Admin) as Django groups, and the DRF permission classes that check them.

A superuser always counts as Admin. Admins may do everything annotators do; readers only see the reader-study
workspace. Object-level rules (e.g. a reader sees only their own assignments) live in each app's permissions.
"""

from django.contrib.auth.models import AnonymousUser
from rest_framework.permissions import BasePermission

ANNOTATOR = "Annotator"
READER = "Reader"
ADMIN = "Admin"
ROLES = (ANNOTATOR, READER, ADMIN)


def roles_of(user) -> set[str]:
    """The role names of ``user`` (empty for anonymous or inactive users), cached on the user object."""
    if user is None or isinstance(user, AnonymousUser) or not user.is_authenticated or not user.is_active:
        return set()
    cached = getattr(user, "_dla_roles", None)
    if cached is None:
        cached = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
        if user.is_superuser:
            cached.add(ADMIN)
        user._dla_roles = cached
    return cached


def is_admin(user) -> bool:
    return ADMIN in roles_of(user)


def is_annotator(user) -> bool:
    """Annotators and admins may work on studies and labels."""
    return bool(roles_of(user) & {ANNOTATOR, ADMIN})


def is_reader(user) -> bool:
    return READER in roles_of(user)


class _RolePermission(BasePermission):
    check = staticmethod(lambda user: False)
    message = "Your role does not allow this."

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated and self.check(request.user))


class IsAdmin(_RolePermission):
    check = staticmethod(is_admin)
    message = "Only admins may do this."


class IsAnnotator(_RolePermission):
    check = staticmethod(is_annotator)
    message = "Only annotators and admins may do this."


class IsReader(_RolePermission):
    check = staticmethod(is_reader)
    message = "Only readers may do this."


class HasAnyRole(_RolePermission):
    check = staticmethod(lambda user: bool(roles_of(user)))
    message = "Your account has no role yet; ask an admin to assign one."


def role_context(request):
    """Template context processor: ``roles`` and booleans for navigation."""
    user = getattr(request, "user", None)
    roles = roles_of(user)
    return {
        "roles": sorted(roles),
        "is_admin": ADMIN in roles,
        "is_annotator": bool(roles & {ANNOTATOR, ADMIN}),
        "is_reader": READER in roles,
    }
