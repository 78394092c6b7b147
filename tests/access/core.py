"""Permission-matrix rules of the project package and the annotations app (see test_permission_matrix)."""

from tests.access.roles import ADMINS, ANNOTATORS, ANY_ROLE, ANY_USER, PUBLIC

RULES = [
    (r"^/api/schema/$", "GET", PUBLIC),
    (r"^/api/auth/token/$", "POST", PUBLIC),
    (r"^/api/auth/token/$", "DELETE", ANY_USER),
    (r"^/api/me/$", "GET", ANY_USER),
    (r"^/api/task-runs/selftest/$", "POST", ADMINS),
    (r"^/api/task-runs/", "*", ANY_ROLE),
    (r"^/api/users/", "*", ADMINS),
    (r"^/api/audit-events/", "*", ADMINS),
    (r"^/api/studies/\{id\}/$", "PUT", ADMINS),
    (r"^/api/studies/\{id\}/$", "PATCH", ADMINS),
    (r"^/api/studies/", "*", ANNOTATORS),
    # viewer rendering: slices, MIPs and cine of volumes, label slices/MIPs of drafts and versions
    (r"^/api/volumes/\{id\}/(slice|mip|cine)/$", "*", ANNOTATORS),
    (r"^/api/drafts/\{id\}/(slice|mip)/$", "GET", ANNOTATORS),
    (r"^/api/label-versions/\{id\}/(slice|mip)/$", "GET", ANNOTATORS),
    (r"^/api/volumes/", "*", ANNOTATORS),
    (r"^/api/label-versions/\{id\}/review/$", "POST", ADMINS),
    (r"^/api/label-versions/", "*", ANNOTATORS),
    (r"^/api/drafts/", "*", ANNOTATORS),
    # DICOMweb servers: browse, retrieve, send back (PACS identities: admins only)
    (r"^/api/dicomweb/", "*", ADMINS),
]
