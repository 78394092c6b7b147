"""A real Orthanc PACS (Debian packages ``orthanc`` and ``orthanc-dicomweb``) for the DICOMweb tests, started by
the suite like PostgreSQL and Redis: its own configuration, a free port and a storage folder under the session's
tmp dir, HTTP basic auth, and Lua filters that model two ways a PACS refuses a store:

- user ``readonly`` may query and retrieve but any POST/PUT/DELETE is refused (HTTP 403);
- instances of PatientID ``REFUSE-STOW`` arriving through DICOMweb are silently dropped (Orthanc's
  ReceivedInstanceFilter: STOW still answers success, which the app must notice).

Importing this module (at collection, before any worker starts) configures the app's DICOMweb servers in the
environment: ``orthanc`` (full rights), ``orthanc-readonly``, ``orthanc-wrongpw`` (a wrong password) and
``orthanc-down`` (a port nobody listens on). The ``orthanc`` session fixture starts the server; ``pacs`` empties
it before a test and returns the helper (import ``orthanc_fixture, pacs_fixture`` into a test module to use them).
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

ORTHANC = shutil.which("Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
REFUSED_PATIENT_ID = "REFUSE-STOW"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PORT, DOWN_PORT = _free_port(), _free_port()
USER, PASSWORD = "dla", secrets.token_hex(8)
READONLY, READONLY_PASSWORD = "readonly", secrets.token_hex(8)
ROOT_URL = f"http://127.0.0.1:{PORT}"
DICOMWEB_URL = f"{ROOT_URL}/dicom-web"

_SERVERS = {
    "orthanc": (DICOMWEB_URL, USER, PASSWORD),
    "orthanc-readonly": (DICOMWEB_URL, READONLY, READONLY_PASSWORD),
    "orthanc-wrongpw": (DICOMWEB_URL, USER, "not-the-password"),
    "orthanc-down": (f"http://127.0.0.1:{DOWN_PORT}/dicom-web", USER, PASSWORD),
}
_names = [n for n in os.environ.get("DLA_DICOMWEB_SERVERS", "").split(",") if n and n not in _SERVERS]
os.environ["DLA_DICOMWEB_SERVERS"] = ",".join([*_names, *_SERVERS])
for _name, (_url, _user, _password) in _SERVERS.items():
    _prefix = "DLA_DICOMWEB_" + _name.upper().replace("-", "_")
    os.environ[f"{_prefix}_URL"] = _url
    os.environ[f"{_prefix}_USERNAME"] = _user
    os.environ[f"{_prefix}_PASSWORD"] = _password
    os.environ[f"{_prefix}_RETRIES"] = "0"
    os.environ[f"{_prefix}_TIMEOUT_S"] = "20"

LUA = f"""
function IncomingHttpRequestFilter(method, uri, ip, username, headers)
  if username == "{READONLY}" and method ~= "GET" and not (method == "POST" and uri == "/tools/find") then
    return false
  end
  return true
end

function ReceivedInstanceFilter(dicom, origin, info)
  if origin["RequestOrigin"] == "Plugins" and dicom["PatientID"] == "{REFUSED_PATIENT_ID}" then
    return false
  end
  return true
end
"""


class Orthanc:
    """The running server and a few REST helpers (Orthanc's own API, for setting up and checking tests)."""

    def __init__(self, folder: Path, process: subprocess.Popen):
        self.folder, self.process = folder, process
        self.dicomweb_url = DICOMWEB_URL

    def rest(self, method: str, path: str, **kwargs) -> requests.Response:
        response = requests.request(method, ROOT_URL + path, auth=(USER, PASSWORD), timeout=30, **kwargs)
        response.raise_for_status()
        return response

    def upload(self, paths) -> int:
        count = 0
        for path in paths:
            self.rest("POST", "/instances", data=Path(path).read_bytes())
            count += 1
        return count

    def clear(self) -> None:
        for patient in self.rest("GET", "/patients").json():
            self.rest("DELETE", f"/patients/{patient}")

    def _lookup(self, uid: str, level: str) -> str:
        matches = [m for m in self.rest("POST", "/tools/lookup", data=uid).json() if m["Type"] == level]
        assert matches, f"{level} not on the server"
        return matches[0]["ID"]

    def delete_study(self, study_uid: str) -> None:
        self.rest("DELETE", f"/studies/{self._lookup(study_uid, 'Study')}")

    def delete_instance(self, sop_instance_uid: str) -> None:
        self.rest("DELETE", f"/instances/{self._lookup(sop_instance_uid, 'Instance')}")

    def instance_count(self) -> int:
        return len(self.rest("GET", "/instances").json())

    def client(self):
        """An independent DICOMweb client (not the app's code) for checking what the server holds."""
        from dicomweb_client.api import DICOMwebClient

        session = requests.Session()
        session.auth = (USER, PASSWORD)
        return DICOMwebClient(DICOMWEB_URL, session=session)


@pytest.fixture(scope="session", name="orthanc")
def orthanc_fixture(tmp_path_factory):
    if ORTHANC is None or not DICOMWEB_PLUGIN.exists():
        pytest.fail(
            "Orthanc with its DICOMweb plugin is not installed: apt-get install -y orthanc orthanc-dicomweb "
            "(scripts/system-deps.sh installs it)"
        )
    folder = tmp_path_factory.mktemp("orthanc")
    (folder / "db").mkdir()
    (folder / "filters.lua").write_text(LUA)
    config = {
        "Name": "DLA-TEST-PACS",
        "HttpPort": PORT,
        "DicomServerEnabled": False,
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD, READONLY: READONLY_PASSWORD},
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "LuaScripts": [str(folder / "filters.lua")],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "SeriesMetadata": "Full"},
        "StableAge": 1,
        "HttpCompressionEnabled": False,
    }
    (folder / "orthanc.json").write_text(json.dumps(config, indent=1))
    log = open(folder / "orthanc.log", "wb")
    process = subprocess.Popen(
        [ORTHANC, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    server = Orthanc(folder, process)
    deadline = time.monotonic() + 30
    while True:
        try:
            server.rest("GET", "/system")
            break
        except requests.RequestException:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                tail = (folder / "orthanc.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"Orthanc did not start on port {PORT}:\n{tail}")
            time.sleep(0.2)
    yield server
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(name="pacs")
def pacs_fixture(orthanc):
    """The session's Orthanc, emptied before the test."""
    orthanc.clear()
    return orthanc
