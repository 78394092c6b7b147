"""API routes of the reader_study app, included under ``/api/`` by ``dla_web.urls``."""

from rest_framework.routers import SimpleRouter

from .views import ReaderStudyViewSet, ReadingStudyViewSet, ReadingViewSet

router = SimpleRouter()
router.register("reader-studies", ReaderStudyViewSet, basename="readerstudy")
router.register("reading-studies", ReadingStudyViewSet, basename="readingstudy")
router.register("reading", ReadingViewSet, basename="reading")

urlpatterns = router.urls
