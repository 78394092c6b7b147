"""scripts/system-deps.sh, the first step of `make test`, on a PATH where chosen commands are missing: it names
the missing packages and the exact apt-get command and stops at once when it may not install (not root, or
DLA_SYSTEM_DEPS=check); as root it runs apt-get (a recording stub here) and checks again."""

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "system-deps.sh"
# command -> Debian package, as the README's fresh-machine instructions need them
COMMANDS = {
    "pg_ctlcluster": "postgresql",
    "redis-server": "redis-server",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    "dciodvfy": "dicom3tools",
    "dcmdump": "dcmtk",
    "pdftoppm": "poppler-utils",
    "make": "make",
}
APT = "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends"


def write_exe(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


@pytest.fixture
def fake_bin():
    """``fake_bin(without=(...), apt_get=False)`` -> a PATH folder holding bash, id, a copy of the script, a
    python3 stub and a stub for every needed command except those in ``without`` ("python3-venv": python3 lacks
    the venv module); ``apt_get`` adds an apt-get stub that logs its arguments and environment to ``apt.log``
    and, on install, creates the stubs of the packages it was asked for."""
    made = []

    def make(without=(), apt_get=False) -> Path:
        folder = Path(tempfile.mkdtemp(prefix="dla-deps-"))
        folder.chmod(0o755)  # readable by the unprivileged user below
        made.append(folder)
        for name in ("bash", "id"):
            (folder / name).symlink_to(shutil.which(name))
        # a copy of the script that the unprivileged user can read wherever the repository lives
        shutil.copy(SCRIPT, folder / SCRIPT.name)
        # python3 stands for the interpreter `python3 -m venv` uses: "import venv, ensurepip" fails without venv
        write_exe(folder / "python3", "exit 1\n" if "python3-venv" in without else "exit 0\n")
        for command in COMMANDS:
            if command not in without:
                write_exe(folder / command, "exit 0\n")
        if apt_get:
            creates = "".join(
                f'  {package}) printf "#!/bin/sh\\n" > {folder}/{command}; /bin/chmod 755 {folder}/{command};;\n'
                for command, package in COMMANDS.items()
            )
            write_exe(
                folder / "apt-get",
                f'echo "$DEBIAN_FRONTEND $*" >> {folder}/apt.log\n'
                f'[ "$1" = install ] || exit 0\nfor p in "$@"; do case "$p" in\n{creates}esac; done\n',
            )
        return folder

    yield make
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


def run(folder: Path, *prefix: str, **env) -> subprocess.CompletedProcess:
    # a generous hang guard only: the script needs milliseconds when it does not install
    return subprocess.run(
        [*prefix, str(folder / SCRIPT.name)],
        env={"PATH": str(folder), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_all_present_is_silent_success(fake_bin):
    out = run(fake_bin(), DLA_SYSTEM_DEPS="check")
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")


def test_missing_commands_stop_with_one_message_when_installing_is_not_allowed(fake_bin):
    out = run(fake_bin(without=("chromium", "pdftoppm", "python3-venv")), DLA_SYSTEM_DEPS="check")
    assert out.returncode == 1 and out.stdout == ""
    (line,) = out.stderr.splitlines()
    assert "missing system packages: chromium poppler-utils python3-venv;" in line
    assert line.endswith(f"{APT} chromium poppler-utils python3-venv")


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to drop to nobody"
)
def test_non_root_user_is_told_the_command_instead_of_installing(fake_bin):
    folder = fake_bin(without=("chromedriver",), apt_get=True)
    out = run(folder, shutil.which("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups")
    assert out.returncode == 1, out.stderr
    (line,) = out.stderr.splitlines()
    assert line.endswith(f"{APT} chromium-driver")
    assert not (folder / "apt.log").exists(), "a non-root run called apt-get"


@pytest.mark.skipif(os.geteuid() != 0, reason="the install branch runs only as root")
def test_root_installs_the_missing_packages_then_checks_again(fake_bin):
    folder = fake_bin(without=("chromium", "dcmdump"), apt_get=True)
    out = run(folder)
    assert out.returncode == 0, out.stderr
    assert "installing system packages: chromium dcmtk" in out.stdout
    assert (folder / "apt.log").read_text().splitlines() == [
        "noninteractive update -q",
        "noninteractive install -y -q --no-install-recommends chromium dcmtk",
    ]
    assert (folder / "chromium").stat().st_mode & stat.S_IXUSR


@pytest.mark.skipif(os.geteuid() != 0, reason="the install branch runs only as root")
def test_root_install_that_leaves_a_command_missing_fails(fake_bin):
    folder = fake_bin(without=("dciodvfy",))
    write_exe(folder / "apt-get", "exit 0\n")  # "succeeds" without installing anything
    out = run(folder)
    assert out.returncode == 1
    assert "still lack their commands: dicom3tools" in out.stderr
