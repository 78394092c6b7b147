"""API routes of the evaluation app, registered on the project's single router."""


def register(router) -> None:
    pass
