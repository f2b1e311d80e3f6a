"""``shunt build-pyz``: one file, ``shunt.pyz``, that runs shunt on any Python >= 3.11 with nothing installed.

The file is a zip application (https://docs.python.org/3/library/zipapp.html): a ``#!/usr/bin/env python3``
line, then a zip holding ``__main__.py``, ``shunt_lib`` and the runtime dependencies. Python imports
from it with :mod:`zipimport`, which loads source and bytecode but never a compiled extension, so:

* the dependencies are copied from the distributions installed where the build runs (their files as
  ``importlib.metadata`` lists them): no pip, no network, and exactly the versions shunt is tested with;
* only pure Python goes in. A compiled module is left out when its pure-Python source is beside it
  (charset_normalizer's optional mypyc speed-ups); any other compiled module stops the build;
* ``--with-redis`` builds ``shunt-redis.pyz``: the same plus the Redis client a ``[cluster]`` needs
  (:data:`REDIS_REQUIREMENTS`, pyproject.toml's ``redis`` extra). ``redis`` needs nothing outside the
  standard library from Python 3.11.3 on; below that (Debian 12 ships 3.11.2) its asyncio part, which
  ``import redis`` loads, needs ``async-timeout`` (https://github.com/redis/redis-py/issues/2633), so
  that goes in too, whatever Python builds the file: see :func:`wanted_names`;
* certifi's ``cacert.pem`` is read through ``importlib.resources``, which extracts it to a temporary
  file when it sits inside a zip (certifi >= 2022.5.18), so requests still verifies TLS.

The bytes depend only on the inputs: entries sorted, one timestamp (``SOURCE_DATE_EPOCH`` if set,
else 1980-01-01, the earliest a zip can hold; https://reproducible-builds.org/specs/source-date-epoch/),
mode 0644, no bytecode, no install records (RECORD, INSTALLER, direct_url.json hold hashes and paths
of the build machine). ``zipapp.create_archive`` takes each file's own mtime and the directory walk's
order, so the archive is written with :mod:`zipfile` in the same layout instead.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import re
import stat
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath

#: What shunt needs at run time: pyproject.toml's ``dependencies`` (a test keeps them equal).
RUNTIME_REQUIREMENTS = ("requests", "urllib3")
#: What ``--with-redis`` adds: pyproject.toml's ``redis`` extra (a test keeps them equal).
REDIS_REQUIREMENTS = ("redis",)
#: The oldest Python a pyz runs on (``MAIN_PY`` refuses older ones).
OLDEST_PYTHON = (3, 11, 0)
#: 1980-01-01T00:00:00Z: the earliest time a zip entry can hold; used when SOURCE_DATE_EPOCH is unset.
DEFAULT_EPOCH_S = 315532800
SHEBANG = b"#!/usr/bin/env python3\n"
MAIN_PY = b'''"""shunt as one file: ``python3 shunt.pyz COMMAND``."""
import sys

if sys.version_info < (3, 11):
    sys.exit("shunt needs Python 3.11 or newer; this is Python " + sys.version.split()[0])

from shunt_lib.cli import main

sys.exit(main())
'''
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_LICENSE = re.compile(r"(LICEN[CS]E|COPYING|NOTICE|AUTHORS)", re.IGNORECASE)
_COMPILED = (".so", ".pyd")
_PYTHON_BELOW = re.compile(r"""^\s*python_(?:full_)?version\s*(<=?)\s*['"]([0-9.]+)['"]\s*$""")


class PyzError(Exception):
    """The pyz cannot be built (a dependency missing or not pure Python, a bad SOURCE_DATE_EPOCH); the message says which."""


@dataclasses.dataclass(frozen=True)
class Built:
    """What :func:`build_pyz` wrote: ``path``, its ``size`` in bytes, and ``bundled`` (name, version) pairs."""

    path: str
    size: int
    bundled: tuple[tuple[str, str], ...]


def source_date_epoch(environ: dict[str, str]) -> int:
    """The zip entries' time in epoch seconds: ``SOURCE_DATE_EPOCH`` if set, else :data:`DEFAULT_EPOCH_S`;
    times before 1980 become 1980 (a zip cannot hold them). :raises PyzError: not a whole number."""
    raw = environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return DEFAULT_EPOCH_S
    try:
        return max(int(raw), DEFAULT_EPOCH_S)
    except ValueError:
        raise PyzError(f"SOURCE_DATE_EPOCH must be a whole number of seconds, not {raw!r}") from None


def wanted_names(requirements: list[str] | None, installed) -> list[str]:
    """The distribution names a distribution's ``Requires-Dist`` lines bring in at run time.

    A requirement limited to an extra (``; extra == "socks"``) is skipped. One for Pythons older than
    some version (``; python_full_version < '3.11.3'``) is taken when a Python the pyz runs on
    (>= :data:`OLDEST_PYTHON`) is that old, whatever Python builds it, so the file works on all of
    them. One with another marker (``; platform_system == "Windows"``) is taken when
    ``installed(name)`` is true, since the installer already decided it for this machine.
    :param installed: ``name -> bool``.
    """
    names = []
    for req in requirements or []:
        spec, _, marker = req.partition(";")
        name = _NAME.match(spec.strip())[0]
        below = _PYTHON_BELOW.match(marker)
        if below:
            bound = tuple(int(p) for p in below[2].split("."))
            if OLDEST_PYTHON < bound or (below[1] == "<=" and OLDEST_PYTHON[:len(bound)] == bound):
                names.append(name)
        elif not marker.strip() or ("extra" not in marker and installed(name)):
            names.append(name)
    return names


def select_files(dist_name: str, names: list[str]) -> list[str]:
    """The files of a distribution (its RECORD paths, ``/``-separated) that go into the pyz.

    Kept: everything under the install directory but bytecode, compiled modules with a pure-Python
    source beside them (and mypyc's shared ``*__mypyc`` runtime), and of ``*.dist-info`` only
    METADATA and license files. :raises PyzError: a compiled module with no pure-Python source.
    """
    present = set(names)
    kept = []
    for name in names:
        path = PurePosixPath(name)
        if path.parts[0] == ".." or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue  # scripts outside the install directory; bytecode
        if path.parts[0].endswith(".dist-info"):
            if path.name == "METADATA" or _LICENSE.match(path.name) or "licenses" in path.parts[1:-1]:
                kept.append(name)
            continue
        if path.name.endswith(_COMPILED):
            module = path.name.split(".", 1)[0]
            if str(path.with_name(module + ".py")) in present or module.endswith("__mypyc"):
                continue
            raise PyzError(f"{dist_name} has a compiled module {name} with no pure-Python source; a zip cannot "
                           f"load it: install a pure-Python build of {dist_name} and build again")
        kept.append(name)
    return kept


def dependency_files(requirements: tuple[str, ...] = RUNTIME_REQUIREMENTS) -> tuple[dict[str, bytes], list[tuple[str, str]]]:
    """``requirements`` and what they need, as installed here: (zip path -> bytes, [(name, version)])
    sorted by name.

    :raises PyzError: a dependency not installed, without a file list, or not pure Python.
    """
    files: dict[str, bytes] = {}
    seen: dict[str, tuple[str, str]] = {}
    todo = list(requirements)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise PyzError(f"{name} is not installed here; install it (pip install {name}) and build again") from None
        seen[key] = (dist.metadata["Name"], dist.version)
        records = dist.files
        if records is None:
            raise PyzError(f"{name} has no list of its files (no RECORD); reinstall it with pip")
        by_name = {str(PurePosixPath(*p.parts)): p for p in records}
        for arcname in select_files(name, sorted(by_name)):
            if arcname in files:
                raise PyzError(f"{arcname} comes from two distributions")
            files[arcname] = Path(dist.locate_file(by_name[arcname])).read_bytes()
        todo += wanted_names(dist.requires, _installed)
    return files, sorted(seen.values())


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def shunt_files() -> dict[str, bytes]:
    """``shunt_lib``'s modules (``*.py``, bytecode left out), the dashboard's files (``shunt_lib/web/*``,
    read with :mod:`importlib.resources`, which reads them from the zip) and ``__main__.py``: zip path -> bytes.

    :raises PyzError: this shunt is not a directory of sources (it runs from a pyz itself).
    """
    package = Path(__file__).parent
    if not package.is_dir():
        raise PyzError("build the pyz from a source checkout or an installed shunt, not from a pyz")
    files = {"__main__.py": MAIN_PY}
    for path in sorted([*package.rglob("*.py"), *(p for p in package.glob("web/*") if p.is_file())]):
        if "__pycache__" not in path.parts:
            files[PurePosixPath("shunt_lib", *path.relative_to(package).parts).as_posix()] = path.read_bytes()
    return files


def write_pyz(files: dict[str, bytes], target: str, epoch_s: int) -> None:
    """Write ``files`` (zip path -> bytes) as a zip application at ``target`` (mode 0755, replaced
    atomically): :data:`SHEBANG`, then the entries sorted by path, each deflated at level 9, mode
    0644, time ``epoch_s`` (UTC)."""
    date_time = time.gmtime(epoch_s)[:6]
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".shunt-pyz-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(SHEBANG)
            with zipfile.ZipFile(out, "w") as archive:
                for name in sorted(files):
                    info = zipfile.ZipInfo(name, date_time)
                    info.create_system = 3  # Unix: external_attr holds the mode
                    info.external_attr = (stat.S_IFREG | 0o644) << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    archive.writestr(info, files[name], compresslevel=9)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise


def build_pyz(target: str, environ: dict[str, str] | None = None, *, with_redis: bool = False) -> Built:
    """Build ``shunt.pyz`` at ``target`` from this shunt and the dependencies installed here.

    :param environ: where ``SOURCE_DATE_EPOCH`` is read (default ``os.environ``).
    :param with_redis: also bundle the Redis client (:data:`REDIS_REQUIREMENTS`): ``shunt-redis.pyz``.
    :raises PyzError: see :func:`dependency_files`, :func:`shunt_files`, :func:`source_date_epoch`.
    """
    from . import __version__

    epoch_s = source_date_epoch(os.environ if environ is None else environ)
    own = shunt_files()
    files, bundled = dependency_files(RUNTIME_REQUIREMENTS + (REDIS_REQUIREMENTS if with_redis else ()))
    files.update(own)
    write_pyz(files, target, epoch_s)
    return Built(target, os.path.getsize(target), (("shunt", __version__), *bundled))
