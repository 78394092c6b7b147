"""Role sets used by the permission-matrix rules."""

PUBLIC = "public"
ANY_USER = {"norole", "annotator", "reader", "admin"}
ANY_ROLE = {"annotator", "reader", "admin"}
ANNOTATORS = {"annotator", "admin"}
READERS = {"reader"}
ADMINS = {"admin"}
