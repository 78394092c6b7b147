"""API routes of the annotations app, registered on the project's single router."""

from .label_views import DraftViewSet, LabelVersionViewSet
from .render_views import DraftRenderViewSet, LabelVersionRenderViewSet, VolumeRenderViewSet
from .views import StudyViewSet, VolumeViewSet


def register(router) -> None:
    router.register("studies", StudyViewSet, basename="study")
    router.register("volumes", VolumeViewSet, basename="volume")
    router.register("drafts", DraftViewSet, basename="draft")
    router.register("label-versions", LabelVersionViewSet, basename="labelversion")
    # rendering (viewer): extra detail routes under the same prefixes
    router.register("volumes", VolumeRenderViewSet, basename="volume-render")
    router.register("drafts", DraftRenderViewSet, basename="draft-render")
    router.register("label-versions", LabelVersionRenderViewSet, basename="labelversion-render")
