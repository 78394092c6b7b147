"""API routes of the annotations app, included under ``/api/`` by ``dla_web.urls``."""

from rest_framework.routers import SimpleRouter

from .label_views import DraftViewSet, LabelVersionViewSet
from .render_views import DraftRenderViewSet, LabelVersionRenderViewSet, VolumeRenderViewSet
from .views import DicomWebViewSet, StudyViewSet, VolumeViewSet

router = SimpleRouter()
router.register("studies", StudyViewSet, basename="study")
router.register("volumes", VolumeViewSet, basename="volume")
router.register("drafts", DraftViewSet, basename="draft")
router.register("label-versions", LabelVersionViewSet, basename="labelversion")
router.register("dicomweb", DicomWebViewSet, basename="dicomweb")
# rendering (viewer): extra detail routes under the same prefixes
router.register("volumes", VolumeRenderViewSet, basename="volume-render")
router.register("drafts", DraftRenderViewSet, basename="draft-render")
router.register("label-versions", LabelVersionRenderViewSet, basename="labelversion-render")

urlpatterns = router.urls
