"""API routes of this app, registered on the project's single router."""

from .views import register_views


def register(router) -> None:
    register_views(router)
