"""API routes of this app, registered on the project's single router."""


def register(router) -> None:
    pass
