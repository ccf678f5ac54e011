"""The built wheel installs one import package, `agenthost`, and coexists with unrelated packages named like our
folders (`storage`, `actors`) in a fresh virtual environment.

Offline: the wheel is built from this checkout without build isolation, the runtime dependencies come from the
wheelhouse `make test` fills ($VENV/wheelhouse), and the two unrelated packages are wheels written here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parent.parent
WHEELHOUSE = Path(sys.prefix) / "wheelhouse"
FORBIDDEN_TOP_LEVEL = ("actors", "protocol", "storage", "chaos", "bench")


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=240, **kwargs)  # type: ignore[call-overload, no-any-return]


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _write_wheel(folder: Path, name: str, files: dict[str, str]) -> Path:
    """A minimal, valid pure-Python wheel `name`-1.0 holding `files` (path -> text)."""
    dist_info = f"{name}-1.0.dist-info"
    contents = {
        **{path: text.encode() for path, text in files.items()},
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: agenthost-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = [_record_line(path, data) for path, data in contents.items()] + [f"{dist_info}/RECORD,,"]
    wheel = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in contents.items():
            archive.writestr(path, data)
        archive.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return wheel


@pytest.fixture(scope="module")
def agenthost_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(REPO),
        ]
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = out.glob("agenthost-*.whl")
    return wheel


def test_the_wheel_holds_only_the_agenthost_package(agenthost_wheel: Path) -> None:
    with zipfile.ZipFile(agenthost_wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        names = set(archive.namelist())
    assert {top for top in tops if not top.endswith(".dist-info")} == {"agenthost"}
    for layer in ("actors", "protocol", "storage", "chaos"):
        assert f"agenthost/{layer}/__init__.py" in names
    assert "agenthost/py.typed" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    with zipfile.ZipFile(agenthost_wheel) as archive:
        text = archive.read(entry_points).decode()
    assert "agenthost = agenthost._cli:main" in text
    assert "agenthost_chaos = agenthost.chaos._plugin" in text  # pytest11: the chaos_host fixture


EMBEDDED_TURN = textwrap.dedent(
    """
    import json, sys, tempfile
    import storage, actors                      # the unrelated packages, imported first
    import agenthost
    from agenthost import AgentHost, HostConfig

    with AgentHost(HostConfig(storage_root=tempfile.mkdtemp(), workers=1)) as host:
        thread_id = host.create_thread("packaging")
        done = host.send(thread_id, "hello from a fresh venv").wait(60)
    import storage as storage_again, actors as actors_again
    print(json.dumps({
        "version": agenthost.__version__,
        "status": done.status,
        "text": done.text,
        "storage": [storage_again.WHO, storage_again.database.WHO, storage_again.__file__],
        "actors": [actors_again.WHO, actors_again.__file__],
        "agenthost": agenthost.__file__,
    }))
    """
)

PROBE_TOP_LEVEL = textwrap.dedent(
    """
    import importlib.util, json
    print(json.dumps({name: importlib.util.find_spec(name) is not None for name in %r}))
    """
)


def test_installed_wheel_coexists_with_packages_named_storage_and_actors(agenthost_wheel: Path, tmp_path: Path) -> None:
    deps = sorted(WHEELHOUSE.glob("*.whl"))
    assert deps, f"no wheels in {WHEELHOUSE}: run `make test` (its install step fills the wheelhouse)"
    storage_wheel = _write_wheel(
        tmp_path,
        "storage",
        {
            "storage/__init__.py": "WHO = 'unrelated storage'\nfrom . import database\n",
            "storage/database.py": "WHO = 'unrelated storage.database'\n",
            "storage/_database.py": "raise ImportError('agenthost must never import this module')\n",
        },
    )
    actors_wheel = _write_wheel(
        tmp_path,
        "actors",
        {
            "actors/__init__.py": "WHO = 'unrelated actors'\n",
            "actors/_api.py": "raise ImportError('agenthost must never import this module')\n",
        },
    )
    venv = tmp_path / "venv"
    created = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert created.returncode == 0, created.stderr
    python = venv / "bin" / "python"
    for wheels in ([storage_wheel, actors_wheel], [agenthost_wheel]):  # the unrelated packages are there first
        installed = _run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(python),
                "install",
                "--quiet",
                "--no-index",
                "--find-links",
                str(WHEELHOUSE),
                *map(str, wheels),
            ]
        )
        assert installed.returncode == 0, installed.stderr

    elsewhere = tmp_path / "elsewhere"  # not the repository: nothing of the checkout can be imported by accident
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    run = _run([str(python), "-c", EMBEDDED_TURN], cwd=elsewhere, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""  # quiet as a library
    report = json.loads(run.stdout)
    assert (report["status"], report["text"]) == ("completed", "Reference reply to: hello from a fresh venv")
    assert report["storage"][:2] == ["unrelated storage", "unrelated storage.database"]
    assert report["actors"][0] == "unrelated actors"
    site = str(venv)
    assert report["agenthost"].startswith(site) and report["storage"][2].startswith(site)

    without = tmp_path / "venv-plain"  # and without the unrelated packages, none of our folder names exists
    assert _run([sys.executable, "-m", "venv", "--without-pip", str(without)]).returncode == 0
    plain = without / "bin" / "python"
    installed = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(plain),
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
            str(WHEELHOUSE),
            str(agenthost_wheel),
        ]
    )
    assert installed.returncode == 0, installed.stderr
    probe = _run([str(plain), "-c", PROBE_TOP_LEVEL % (FORBIDDEN_TOP_LEVEL,)], cwd=elsewhere, env=env)
    assert json.loads(probe.stdout) == {name: False for name in FORBIDDEN_TOP_LEVEL}, probe.stderr
    version = _run([str(plain), "-c", "import agenthost; print(agenthost.__version__)"], cwd=elsewhere, env=env)
    assert version.stdout.strip() == report["version"] != "0+unknown"
