"""Start, stop and inspect the project's own Kafka broker and PostgreSQL server.

Usage: ``python infra/services.py up|down|status`` (and ``kill-kafka`` / ``stop-postgres``, the
chaos harness's faults: a broker SIGKILL, a database outage; ``up`` brings them back)

* Kafka: Apache Kafka (KRaft, single node) from Maven Central jars (``infra/kafka/pom.xml``),
  listening on 127.0.0.1:19092.
* PostgreSQL: the machine's server binaries (Debian's ``postgresql`` package is installed
  when none are found), a cluster in the project folder, listening on 127.0.0.1:15432.
* Mail (``infra/mailservers.py``): Postfix (SMTP 12525, submission 12587, SMTPS 12465), Dovecot
  (IMAP 14143, IMAPS 14993, LMTP 14024) and a local OAuth2 server (14080) for XOAUTH2, installed
  from Debian's packages when missing; ``DRIPDROP_MAIL=0`` leaves them out.

Everything lives under ``.dripdrop/`` (git-ignored). ``up`` is idempotent; ``down`` stops only
the processes whose pids ``up`` recorded. When ``DRIPDROP_KAFKA_BOOTSTRAP`` or
``DRIPDROP_DATABASE_URL`` is set, that service is the user's own: it is checked, never started
or stopped. Readiness is polled, never slept for.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mailservers  # noqa: E402 - infra/ is a folder of scripts, not a package

ROOT = Path(__file__).resolve().parent.parent
HOME = Path(os.environ.get("DRIPDROP_HOME", ROOT / ".dripdrop"))
KAFKA_PORT = 19092
CONTROLLER_PORT = 19093
PG_PORT = 15432
PG_USER = "dripdrop"
PG_DB = "dripdrop"
READY_TIMEOUT = float(os.environ.get("DRIPDROP_READY_TIMEOUT", "90"))


class ServiceError(Exception):
    """A service could not be started or reached; the message says what to do."""


def log(msg: str) -> None:
    print(f"[services] {msg}", flush=True)


# ---------------------------------------------------------------- processes and ports


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child is not alive
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    except OSError:
        return True


def read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_until(
    what: str,
    check: Callable[[], bool],
    *,
    alive: Callable[[], bool] | None = None,
    log_file: Path | None = None,
) -> float:
    """Poll ``check`` until it returns True; fail fast if the process died."""
    start = time.monotonic()
    delay = 0.1
    while True:
        if check():
            return time.monotonic() - start
        if alive is not None and not alive():
            raise ServiceError(f"{what} exited during start-up.{tail(log_file)}")
        if time.monotonic() - start > READY_TIMEOUT:
            raise ServiceError(f"{what} not ready after {READY_TIMEOUT:.0f}s.{tail(log_file)}")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


def tail(path: Path | None, lines: int = 25) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last lines of {path} ---\n" + "\n".join(text)


def stop_pid(name: str, pid_file: Path, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
    pid = read_pid(pid_file)
    if pid is None:
        log(f"{name}: not running (no live recorded pid)")
        pid_file.unlink(missing_ok=True)
        return
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        log(f"{name}: pid {pid} ignored SIGTERM for {timeout:.0f}s, sending SIGKILL")
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    log(f"{name}: stopped pid {pid}")


# ---------------------------------------------------------------- Kafka


def kafka_dir() -> Path:
    return HOME / "kafka"


def apt_install(*packages: str) -> None:
    """Install Debian packages (as root); the project's scripts install what they need."""
    if os.geteuid() != 0:
        raise ServiceError(f"missing {', '.join(packages)}: install them (apt-get install ...)")
    log(f"installing Debian packages: {' '.join(packages)} ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", *packages], check=True, env=env)


def ensure_java_and_maven() -> None:
    missing = []
    if shutil.which("java") is None:
        missing.append("openjdk-17-jre-headless")
    if shutil.which("mvn") is None:
        missing.append("maven")
    if missing:
        apt_install(*missing)


def kafka_libs() -> Path:
    """Resolve the broker jars with Maven once; a stamp of the pom's hash makes reruns free."""
    libs = kafka_dir() / "libs"
    pom = ROOT / "infra" / "kafka" / "pom.xml"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    stamp = libs / ".pom.sha256"
    if stamp.exists() and stamp.read_text() == digest:
        return libs
    ensure_java_and_maven()
    log("fetching Kafka jars from Maven Central (first run only)...")
    shutil.rmtree(libs, ignore_errors=True)
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={libs}",
        ],
        check=True,
    )
    stamp.write_text(digest)
    return libs


def kafka_properties(data: Path) -> str:
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{CONTROLLER_PORT}",
            f"listeners=PLAINTEXT://127.0.0.1:{KAFKA_PORT},CONTROLLER://127.0.0.1:{CONTROLLER_PORT}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{KAFKA_PORT}",
            "inter.broker.listener.name=PLAINTEXT",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={data}",
            "num.partitions=8",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=8",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            # Tests and the demo start and stop workers often: no 3 s join delay, quick failover.
            "group.initial.rebalance.delay.ms=0",
            "group.min.session.timeout.ms=1000",
            # Topics are created explicitly with their configs (guides/faust-and-kafka.md §1.3).
            "auto.create.topics.enable=false",
            "log.retention.hours=-1",
            "",
        ]
    )


def java_cmd(libs: Path, main: str, *args: str) -> list[str]:
    return [
        "java",
        "-Xms256m",
        "-Xmx512m",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={kafka_dir() / 'logs'}",
        "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
        "-Dorg.slf4j.simpleLogger.showDateTime=true",
        "-cp",
        f"{libs}/*",
        main,
        *args,
    ]


def kafka_ready() -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{KAFKA_PORT}", "log_level": 0})
        meta = admin.list_topics(timeout=1.0)
        return bool(meta.brokers)
    except Exception:  # noqa: BLE001 - any failure means "not yet"
        return False


def kafka_up() -> None:
    external = os.environ.get("DRIPDROP_KAFKA_BOOTSTRAP")
    if external:
        log(f"kafka: using your broker at {external} (DRIPDROP_KAFKA_BOOTSTRAP); not starting one")
        return
    pid_file = kafka_dir() / "kafka.pid"
    if read_pid(pid_file) is not None and kafka_ready():
        log(f"kafka: already running (pid {read_pid(pid_file)}) on 127.0.0.1:{KAFKA_PORT}")
        return
    for port in (KAFKA_PORT, CONTROLLER_PORT):
        if port_open(port):
            raise ServiceError(
                f"kafka: port {port} on 127.0.0.1 is taken by a process this project did not "
                "start. Free the port, or point DRIPDROP_KAFKA_BOOTSTRAP at your own broker."
            )
    ensure_java_and_maven()
    libs = kafka_libs()
    data = kafka_dir() / "data"
    (kafka_dir() / "logs").mkdir(parents=True, exist_ok=True)
    props = kafka_dir() / "server.properties"
    props.write_text(kafka_properties(data))
    log_file = kafka_dir() / "logs" / "broker.out"
    if not (data / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        fmt = subprocess.run(
            java_cmd(libs, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)),
            capture_output=True,
            text=True,
        )
        if fmt.returncode != 0:
            raise ServiceError(f"kafka: formatting storage failed:\n{fmt.stdout}{fmt.stderr}")
    started = time.monotonic()
    with log_file.open("ab") as out:
        proc = subprocess.Popen(
            java_cmd(libs, "kafka.Kafka", str(props)),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file.write_text(str(proc.pid))
    wait_until("kafka", kafka_ready, alive=lambda: proc.poll() is None, log_file=log_file)
    log(
        f"kafka: ready on 127.0.0.1:{KAFKA_PORT} (pid {proc.pid}, "
        f"{time.monotonic() - started:.1f}s; log {log_file})"
    )


def kafka_down() -> None:
    if os.environ.get("DRIPDROP_KAFKA_BOOTSTRAP"):
        log("kafka: yours (DRIPDROP_KAFKA_BOOTSTRAP); leaving it alone")
        return
    stop_pid("kafka", kafka_dir() / "kafka.pid")


# ---------------------------------------------------------------- PostgreSQL


def pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    return str(candidates[0]) if candidates else None


def require_pg_bin(name: str) -> str:
    """``pg_bin`` for a binary that must exist (``ensure_pg_binaries`` installed it)."""
    found = pg_bin(name)
    if found is None:
        raise ServiceError(f"postgres: no {name} binary found")
    return found


def ensure_pg_binaries() -> None:
    if pg_bin("pg_ctl") and pg_bin("initdb"):
        return
    log("postgres: no server binaries found")
    apt_install("postgresql")
    if not (pg_bin("pg_ctl") and pg_bin("initdb")):
        raise ServiceError("postgres: installed the package but found no pg_ctl/initdb")


def as_pg_owner(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the ``postgres`` user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def pg_dir() -> Path:
    return HOME / "pg"


def pg_ready() -> bool:
    import psycopg

    try:
        with psycopg.connect(
            host="127.0.0.1", port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=1
        ):
            return True
    except psycopg.Error:
        return False


def pg_up() -> None:
    external = os.environ.get("DRIPDROP_DATABASE_URL")
    if external:
        log("postgres: using your server (DRIPDROP_DATABASE_URL); not starting one")
        return
    pid_file = pg_dir() / "postgres.pid"
    if read_pid(pid_file) is not None and pg_ready():
        log(f"postgres: already running (pid {read_pid(pid_file)}) on 127.0.0.1:{PG_PORT}")
        return
    if port_open(PG_PORT):
        raise ServiceError(
            f"postgres: port {PG_PORT} on 127.0.0.1 is taken by a process this project did not "
            "start. Free the port, or point DRIPDROP_DATABASE_URL at your own server."
        )
    ensure_pg_binaries()
    data, sock = pg_dir() / "data", pg_dir() / "run"
    pg_dir().mkdir(parents=True, exist_ok=True)
    sock.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(pg_dir(), "postgres")
        shutil.chown(sock, "postgres")
    if not (data / "PG_VERSION").exists():
        subprocess.run(
            as_pg_owner(
                [
                    require_pg_bin("initdb"),
                    "-D",
                    str(data),
                    "-U",
                    PG_USER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    log_file = pg_dir() / "postgres.log"
    started = time.monotonic()
    opts = (
        f"-p {PG_PORT} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=on "
        "-c max_connections=200 -c shared_buffers=256MB"
    )
    result = subprocess.run(
        as_pg_owner(
            [
                require_pg_bin("pg_ctl"),
                "-D",
                str(data),
                "-o",
                opts,
                "-l",
                str(log_file),
                "-w",
                "-t",
                str(int(READY_TIMEOUT)),
                "start",
            ]
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if result.returncode != 0:
        raise ServiceError(
            f"postgres: pg_ctl start failed: {result.stderr.strip()}{tail(log_file)}"
        )
    pid = int((data / "postmaster.pid").read_text().splitlines()[0])
    pid_file.write_text(str(pid))
    wait_until("postgres", pg_ready, alive=lambda: pid_alive(pid), log_file=log_file)
    ensure_database()
    log(
        f"postgres: ready on 127.0.0.1:{PG_PORT} (pid {pid}, {time.monotonic() - started:.1f}s; "
        f"database {PG_DB}, user {PG_USER}; log {log_file})"
    )


def ensure_database() -> None:
    import psycopg

    with psycopg.connect(
        host="127.0.0.1", port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True
    ) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DB,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{PG_DB}"')


def pg_down() -> None:
    if os.environ.get("DRIPDROP_DATABASE_URL"):
        log("postgres: yours (DRIPDROP_DATABASE_URL); leaving it alone")
        return
    pid_file = pg_dir() / "postgres.pid"
    pid = read_pid(pid_file)
    data = pg_dir() / "data"
    postmaster = data / "postmaster.pid"
    if pid is not None and postmaster.exists() and postmaster.read_text().split()[0] == str(pid):
        # pg_ctl's fast shutdown of exactly this data directory; stop_pid is the fallback.
        subprocess.run(
            as_pg_owner(
                [pg_bin("pg_ctl") or "pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop"]
            ),
            check=False,
            stdout=subprocess.DEVNULL,
        )
        if not pid_alive(pid):
            pid_file.unlink(missing_ok=True)
            log(f"postgres: stopped pid {pid}")
            return
    stop_pid("postgres", pid_file)


# ---------------------------------------------------------------- entry point


def status() -> None:
    k = read_pid(kafka_dir() / "kafka.pid")
    p = read_pid(pg_dir() / "postgres.pid")
    log(f"kafka: {'running pid ' + str(k) if k else 'not running'} (127.0.0.1:{KAFKA_PORT})")
    log(f"postgres: {'running pid ' + str(p) if p else 'not running'} (127.0.0.1:{PG_PORT})")
    mailservers.mail_status()


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "status"
    HOME.mkdir(parents=True, exist_ok=True)
    try:
        if command == "up":
            pg_up()
            kafka_up()
            mailservers.mail_up()
        elif command == "down":
            mailservers.mail_down()
            kafka_down()
            pg_down()
        elif command == "status":
            status()
        elif command == "kill-kafka":  # the chaos harness: a broker crash, no clean stop
            stop_pid("kafka", kafka_dir() / "kafka.pid", sig=signal.SIGKILL)
        elif command == "stop-postgres":  # the chaos harness: a database outage
            pg_down()
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (ServiceError, mailservers.MailServiceError) as exc:
        print(f"[services] error: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(
            f"[services] error: command failed ({exc.returncode}): {' '.join(map(str, exc.cmd))}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
