"""Page (HTML) routes of this app; templates live in frontend/templates/evaluation/."""

urlpatterns: list = []
