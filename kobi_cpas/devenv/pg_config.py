"""What the launcher writes into a cluster: initdb's options and the settings rewritten at every start."""

from __future__ import annotations

from pathlib import Path

from kobi_cpas.devenv.pg_admin import SUPERUSER

RUNTIME_CONF = "kobi_local.conf"


def _conf_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def initdb_args(pgdata: Path, durable: bool) -> list[str]:
    args = [
        "-D",
        str(pgdata),
        "-U",
        SUPERUSER,
        "--encoding=UTF8",
        "--no-locale",
        # Socket: trust (only the server user and root reach the private socket dir).
        # TCP (loopback only): password. md5 rather than scram because dagster-postgres opens a new
        # connection per storage call and scram's key stretching costs ~10 ms each; this cluster is a
        # private dev/test server, production Postgres keeps its own settings.
        "--auth-local=trust",
        "--auth-host=md5",
    ]
    if not durable:
        args.append("--no-sync")
    return args


def include_runtime_conf(pgdata: Path) -> None:
    """After initdb: make postgresql.conf read the file `write_runtime_conf` rewrites."""
    with (pgdata / "postgresql.conf").open("a") as handle:
        handle.write("\n# Port, socket dir and durability are rewritten at every start.\n")
        handle.write(f"include_if_exists = '{RUNTIME_CONF}'\n")
        # Pairs with --auth-host=md5 above (set at init so clusters made earlier keep their scheme).
        handle.write("password_encryption = 'md5'\n")


def write_runtime_conf(pgdata: Path, port: int, socket_dir: Path, durable: bool) -> Path:
    settings = {
        "port": str(port),
        "listen_addresses": _conf_quote("127.0.0.1"),
        "unix_socket_directories": _conf_quote(str(socket_dir)),
        # dagster dev (webserver, daemon, code server, runs) opens many connections.
        "max_connections": "200",
    }
    if not durable:
        settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
    text = "# Written by kobi_cpas.devenv.postgres at every start; edits are overwritten.\n"
    text += "".join(f"{key} = {value}\n" for key, value in settings.items())
    path = pgdata / RUNTIME_CONF
    path.write_text(text)
    return path


def previous_port(pgdata: Path) -> int | None:
    """The port of the cluster's last start, if any."""
    try:
        text = (pgdata / RUNTIME_CONF).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "port" and value.strip().isdigit():
            return int(value.strip())
    return None
