"""Roles (Annotator, Reader, Admin) as Django groups, and the DRF permission classes that check them.

A superuser always counts as Admin. Admins may do everything annotators do; readers only see the reader-study
workspace. Object-level rules (e.g. a reader sees only their own assignments) live in each app's permissions.
``check_keeps_an_admin`` refuses a change that would leave no active admin (the API and the Django admin call it).
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


class LastAdminError(ValueError):
    """A change would leave the installation without an active admin."""


def is_active_admin_account(*, is_active: bool, is_superuser: bool, roles) -> bool:
    return bool(is_active) and (bool(is_superuser) or ADMIN in set(roles))


def check_keeps_an_admin(user, *, is_active: bool, is_superuser: bool, roles) -> None:
    """Raise ``LastAdminError`` when ``user`` is an active admin now, would not be after the change
    (``is_active``, ``is_superuser``, ``roles``: the values after it) and no other active admin exists."""
    from django.contrib.auth import get_user_model
    from django.db.models import Q

    if user is None or user.pk is None:
        return
    fresh = get_user_model().objects.filter(pk=user.pk).first()
    if fresh is None:
        return
    now = is_active_admin_account(
        is_active=fresh.is_active,
        is_superuser=fresh.is_superuser,
        roles=fresh.groups.values_list("name", flat=True),
    )
    after = is_active_admin_account(is_active=is_active, is_superuser=is_superuser, roles=roles)
    if not now or after:
        return
    others = (
        get_user_model()
        .objects.filter(is_active=True)
        .filter(Q(is_superuser=True) | Q(groups__name=ADMIN))
        .exclude(pk=user.pk)
        .exists()
    )
    if not others:
        raise LastAdminError(
            f"{user.username} is the last active admin: give another active user the Admin role first (without "
            "an admin nobody could manage users, approve labels or train models)."
        )


def is_last_active_admin(user) -> bool:
    """True when deleting ``user`` would leave no active admin."""
    try:
        check_keeps_an_admin(user, is_active=False, is_superuser=False, roles=())
    except LastAdminError:
        return True
    return False


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
