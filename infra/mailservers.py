"""Postfix, Dovecot and a local OAuth2 server under ``.dripdrop/mail/``, for the real-MTA tests.

Used by ``infra/services.py up|down|status``. Debian's ``postfix``, ``dovecot-imapd`` and
``dovecot-lmtpd`` are installed when missing (as root, noninteractive, postfix preseeded to "No
configuration"); their own system services are never used. Our instances:

* Dovecot: IMAP 127.0.0.1:14143 (STARTTLS), IMAPS 14993, LMTP 14024 (Postfix delivers here), SASL
  auth 14012 (Postfix's submission asks it). Users: ``mail/users`` (a passwd-file, re-read when it
  changes; ``tests/integration/mail_fixtures.py`` adds to it), maildirs ``mail/maildirs/<address>``.
  PLAIN/LOGIN against that file; XOAUTH2/OAUTHBEARER through Dovecot's ``oauth2`` passdb, which
  introspects the access token at the local OAuth2 server.
* Postfix: 12525 plain SMTP (the MX of ``MAIL_DOMAINS``; unknown users bounce with real RFC 3464
  reports, other domains are bounced too: nothing leaves the machine), 12587 submission (STARTTLS
  and AUTH required), 12465 implicit TLS + AUTH.
* The OAuth2 server ``infra/oauth_idp.py`` on 14080 (refresh-token grant + introspection); its
  clients and refresh tokens are in ``mail/oauth/state.json``.
* A test CA ``mail/tls/ca.pem`` that signed the servers' certificate for ``localhost`` and
  127.0.0.1, so clients verify TLS for real.

Processes are stopped by the pids recorded at start; readiness is polled on the ports.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HOME = Path(os.environ.get("DRIPDROP_HOME", Path(__file__).resolve().parent.parent / ".dripdrop"))
MAIL = HOME / "mail"
INFRA = Path(__file__).resolve().parent
READY_TIMEOUT = float(os.environ.get("DRIPDROP_READY_TIMEOUT", "90"))

SMTP_PORT = 12525
SUBMISSION_PORT = 12587
SMTPS_PORT = 12465
IMAP_PORT = 14143
IMAPS_PORT = 14993
LMTP_PORT = 14024
AUTH_PORT = 14012
OAUTH_PORT = 14080
MAIL_DOMAINS = ("dripdrop.test", "example.test", "prospects.test")
MAIL_USER = "mail"  # Debian's uid 8: owns the maildirs (Dovecot refuses root)
PACKAGES = ("postfix", "dovecot-imapd", "dovecot-lmtpd")


class MailServiceError(Exception):
    """A mail service could not be installed, configured or started."""


def log(msg: str) -> None:
    print(f"[services] {msg}", flush=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _pid_alive(pid) else None


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, lines: int = 25) -> str:
    if not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last lines of {path} ---\n" + "\n".join(text)


def _wait(what: str, check: Callable[[], bool], log_file: Path) -> None:
    start, delay = time.monotonic(), 0.05
    while not check():
        if time.monotonic() - start > READY_TIMEOUT:
            raise MailServiceError(f"{what} not ready after {READY_TIMEOUT:.0f}s.{_tail(log_file)}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def _run(cmd: list[str], what: str) -> None:
    # Output to a file, not a pipe: a daemon's children inherit the pipe and run() would wait
    # for them to exit.
    out = MAIL / "commands.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a+") as sink:
        start = sink.tell()
        result = subprocess.run(cmd, stdout=sink, stderr=sink, stdin=subprocess.DEVNULL)
        sink.seek(start)
        output = sink.read().strip()
    if result.returncode != 0:
        raise MailServiceError(f"{what} failed ({result.returncode}): {output[-2000:]}")


# ---------------------------------------------------------------- packages and TLS


def ensure_packages() -> None:
    """Install Postfix and Dovecot from Debian when missing (their own init scripts fail: fine)."""
    if (
        shutil.which("postfix")
        and shutil.which("dovecot")
        and Path("/usr/lib/dovecot/lmtp").exists()
    ):
        return
    if os.geteuid() != 0:
        raise MailServiceError(f"missing {', '.join(PACKAGES)}: apt-get install them as root")
    log(f"installing Debian packages: {' '.join(PACKAGES)} ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    preseed = (
        "postfix postfix/main_mailer_type select No configuration\n"
        "postfix postfix/mailname string localhost\n"
    )
    subprocess.run(["debconf-set-selections"], input=preseed, text=True, check=True, env=env)
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", *PACKAGES],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def ensure_tls() -> Path:
    """A test CA and a server certificate for localhost/127.0.0.1 it signed (made once)."""
    tls = MAIL / "tls"
    if (tls / "server.pem").exists() and (tls / "ca.pem").exists():
        return tls
    tls.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        tls / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    _run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
            "-keyout", str(ca_key), "-out", str(ca), "-subj", "/CN=DripDrop test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ],
        "openssl (test CA)",
    )  # fmt: skip
    _run(
        [
            "openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
            "-out", str(csr), "-subj", "/CN=localhost",
        ],
        "openssl (server key)",
    )  # fmt: skip
    ext = tls / "server.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _run(
        [
            "openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "825", "-sha256", "-extfile", str(ext), "-out", str(cert),
        ],
        "openssl (server certificate)",
    )  # fmt: skip
    os.chmod(key, 0o600)
    os.chmod(ca_key, 0o600)
    return tls


# ---------------------------------------------------------------- Dovecot


def dovecot_dir() -> Path:
    return MAIL / "dovecot"


def users_file() -> Path:
    return MAIL / "users"


def maildirs() -> Path:
    return MAIL / "maildirs"


def dovecot_conf(tls: Path) -> str:
    d = dovecot_dir()
    return f"""# generated by infra/mailservers.py; edits are overwritten by `services.py up`
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
listen = 127.0.0.1
protocols = imap lmtp
ssl = yes
ssl_cert = <{tls}/server.pem
ssl_key = <{tls}/server.key
ssl_min_protocol = TLSv1.2
auth_mechanisms = plain login xoauth2 oauthbearer
auth_username_format = %Lu
first_valid_uid = {pwd.getpwnam(MAIL_USER).pw_uid}
mail_location = maildir:{maildirs()}/%u
mail_uid = {MAIL_USER}
mail_gid = {MAIL_USER}
lmtp_save_to_detail_mailbox = no
namespace inbox {{
  inbox = yes
  # RFC 6154 special-use: the pump finds the Sent folder by its \\Sent flag (issue 13 item 5)
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users_file()}
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {d}/oauth2.conf.ext
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {users_file()}
  default_fields = uid={MAIL_USER} gid={MAIL_USER} home={maildirs()}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {IMAP_PORT}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {IMAPS_PORT}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {LMTP_PORT}
  }}
}}
service auth {{
  user = root
  inet_listener auth-postfix {{
    address = 127.0.0.1
    port = {AUTH_PORT}
  }}
}}
"""


def oauth2_conf() -> str:
    return f"""# Dovecot oauth2 passdb: tokens checked by RFC 7662 introspection (oauth_idp.py)
introspection_mode = post
introspection_url = http://127.0.0.1:{OAUTH_PORT}/introspect
force_introspection = yes
username_attribute = email
active_attribute = active
active_value = true
"""


def dovecot_up(tls: Path) -> None:
    d = dovecot_dir()
    pid_file = d / "run" / "master.pid"
    if _read_pid(pid_file) is not None and _port_open(IMAP_PORT):
        log(f"dovecot: already running (pid {_read_pid(pid_file)})")
        return
    for port in (IMAP_PORT, IMAPS_PORT, LMTP_PORT, AUTH_PORT):
        if _port_open(port):
            raise MailServiceError(
                f"dovecot: port {port} on 127.0.0.1 is taken by a process this project did not "
                "start. Free the port (or set DRIPDROP_MAIL=0 to run without mail servers)."
            )
    for sub in ("run", "state"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    maildirs().mkdir(parents=True, exist_ok=True)
    shutil.chown(maildirs(), MAIL_USER, MAIL_USER)
    users_file().touch(exist_ok=True)
    os.chmod(users_file(), 0o600)
    (d / "dovecot.conf").write_text(dovecot_conf(tls))
    (d / "oauth2.conf.ext").write_text(oauth2_conf())
    log_file = d / "dovecot.log"
    started = time.monotonic()
    _run(["dovecot", "-c", str(d / "dovecot.conf")], "dovecot start")

    def ready() -> bool:
        if _read_pid(pid_file) is None:
            return False
        return all(_port_open(p) for p in (IMAP_PORT, IMAPS_PORT, LMTP_PORT, AUTH_PORT))

    _wait("dovecot", ready, log_file)
    log(
        f"dovecot: ready, IMAP {IMAP_PORT} / IMAPS {IMAPS_PORT} / LMTP {LMTP_PORT} / auth "
        f"{AUTH_PORT} (pid {_read_pid(pid_file)}, {time.monotonic() - started:.1f}s; "
        f"log {log_file})"
    )


# ---------------------------------------------------------------- Postfix


def postfix_dir() -> Path:
    return MAIL / "postfix"


def postfix_main_cf(tls: Path) -> str:
    d = postfix_dir()
    domains = ", ".join(MAIL_DOMAINS)
    return f"""# generated by infra/mailservers.py; edits are overwritten by `services.py up`
compatibility_level = 3.6
config_directory = {d}
queue_directory = {d}/queue
data_directory = {d}/data
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
mail_owner = postfix
setgid_group = postdrop
maillog_file = {d}/maillog
maillog_file_prefixes = {MAIL}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.dripdrop.test
mydomain = dripdrop.test
myorigin = dripdrop.test
mydestination = {domains}
mynetworks = 127.0.0.0/8
local_recipient_maps =
alias_maps =
alias_database =
local_transport = lmtp:inet:127.0.0.1:{LMTP_PORT}
default_transport = error:5.7.1 this test server delivers only to {domains}
relay_transport = error:5.7.1 this test server delivers only to {domains}
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_tls_cert_file = {tls}/server.pem
smtpd_tls_key_file = {tls}/server.key
smtpd_tls_security_level = may
smtpd_tls_loglevel = 0
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{AUTH_PORT}
smtpd_sasl_auth_enable = no
smtpd_banner = $myhostname ESMTP
biff = no
append_dot_mydomain = no
readme_directory = no
smtputf8_enable = no
delay_warning_time = 0
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 60s
maximal_queue_lifetime = 1h
bounce_queue_lifetime = 1h
lmtp_host_lookup = native
smtp_host_lookup = native
disable_dns_lookups = yes
"""


_SUBMISSION_OPTS = (
    "  -o smtpd_sasl_auth_enable=yes\n"
    "  -o smtpd_tls_auth_only=yes\n"
    "  -o smtpd_client_restrictions=permit_sasl_authenticated,reject\n"
    "  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject\n"
    "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n"
)


def postfix_master_cf() -> str:
    # No chroot anywhere: the queue lives under the project folder, not /var/spool/postfix.
    services = [
        f"127.0.0.1:{SMTP_PORT} inet n - n - - smtpd",
        f"127.0.0.1:{SUBMISSION_PORT} inet n - n - - smtpd\n"
        "  -o syslog_name=postfix/submission\n"
        "  -o smtpd_tls_security_level=encrypt\n" + _SUBMISSION_OPTS.rstrip("\n"),
        f"127.0.0.1:{SMTPS_PORT} inet n - n - - smtpd\n"
        "  -o syslog_name=postfix/smtps\n"
        "  -o smtpd_tls_wrappermode=yes\n" + _SUBMISSION_OPTS.rstrip("\n"),
        "pickup unix n - n 60 1 pickup",
        "cleanup unix n - n - 0 cleanup",
        "qmgr unix n - n 300 1 qmgr",
        "tlsmgr unix - - n 1000? 1 tlsmgr",
        "rewrite unix - - n - - trivial-rewrite",
        "bounce unix - - n - 0 bounce",
        "defer unix - - n - 0 bounce",
        "trace unix - - n - 0 bounce",
        "verify unix - - n - 1 verify",
        "flush unix n - n 1000? 0 flush",
        "proxymap unix - - n - - proxymap",
        "proxywrite unix - - n - 1 proxymap",
        "smtp unix - - n - - smtp",
        "relay unix - - n - - smtp",
        "showq unix n - n - - showq",
        "error unix - - n - - error",
        "retry unix - - n - - error",
        "discard unix - - n - - discard",
        "local unix - n n - - local",
        "lmtp unix - - n - - lmtp",
        "anvil unix - - n - 1 anvil",
        "scache unix - - n - 1 scache",
        "postlog unix-dgram n - n - 1 postlogd",
    ]
    return "# generated by infra/mailservers.py\n" + "\n".join(services) + "\n"


def postfix_up(tls: Path) -> None:
    d = postfix_dir()
    pid_file = d / "queue" / "pid" / "master.pid"
    if _read_pid(pid_file) is not None and _port_open(SMTP_PORT):
        log(f"postfix: already running (pid {_read_pid(pid_file)})")
        return
    for port in (SMTP_PORT, SUBMISSION_PORT, SMTPS_PORT):
        if _port_open(port):
            raise MailServiceError(
                f"postfix: port {port} on 127.0.0.1 is taken by a process this project did not "
                "start. Free the port (or set DRIPDROP_MAIL=0 to run without mail servers)."
            )
    (d / "queue").mkdir(parents=True, exist_ok=True)
    (d / "data").mkdir(parents=True, exist_ok=True)
    (d / "main.cf").write_text(postfix_main_cf(tls))
    (d / "master.cf").write_text(postfix_master_cf())
    log_file = d / "maillog"
    _run(["postfix", "-c", str(d), "set-permissions"], "postfix set-permissions")
    _run(["postfix", "-c", str(d), "post-install", "create-missing"], "postfix post-install")
    shutil.chown(d / "data", "postfix")
    started = time.monotonic()
    try:
        _run(["postfix", "-c", str(d), "start"], "postfix start")
    except MailServiceError as exc:
        raise MailServiceError(
            f"{exc} (debug: MAIL_CONFIG={d} sh -x /usr/lib/postfix/sbin/postfix-script start)"
            f"{_tail(log_file)}"
        ) from None
    _wait(
        "postfix",
        lambda: (
            _read_pid(pid_file) is not None
            and all(_port_open(p) for p in (SMTP_PORT, SUBMISSION_PORT, SMTPS_PORT))
        ),
        log_file,
    )
    log(
        f"postfix: ready, SMTP {SMTP_PORT} / submission {SUBMISSION_PORT} / SMTPS {SMTPS_PORT} "
        f"(pid {_read_pid(pid_file)}, {time.monotonic() - started:.1f}s; log {log_file})"
    )


# ---------------------------------------------------------------- OAuth2 server


def oauth_dir() -> Path:
    return MAIL / "oauth"


def oauth_state_file() -> Path:
    return oauth_dir() / "state.json"


def _oauth_ready() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", OAUTH_PORT), timeout=0.5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def oauth_up() -> None:
    d = oauth_dir()
    pid_file = d / "oauth_idp.pid"
    if _read_pid(pid_file) is not None and _oauth_ready():
        log(f"oauth: already running (pid {_read_pid(pid_file)})")
        return
    if _port_open(OAUTH_PORT):
        raise MailServiceError(
            f"oauth: port {OAUTH_PORT} on 127.0.0.1 is taken by a process this project did not "
            "start. Free the port (or set DRIPDROP_MAIL=0 to run without mail servers)."
        )
    d.mkdir(parents=True, exist_ok=True)
    if not oauth_state_file().exists():
        oauth_state_file().write_text(json.dumps({"clients": {}, "refresh_tokens": {}}))
    os.chmod(oauth_state_file(), 0o600)
    log_file = d / "oauth_idp.log"
    started = time.monotonic()
    with log_file.open("ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(INFRA / "oauth_idp.py"),
                "--port",
                str(OAUTH_PORT),
                "--state",
                str(oauth_state_file()),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file.write_text(str(proc.pid))

    def ready() -> bool:
        if proc.poll() is not None:
            raise MailServiceError(f"oauth: exited during start-up.{_tail(log_file)}")
        return _oauth_ready()

    _wait("oauth", ready, log_file)
    log(
        f"oauth: ready on 127.0.0.1:{OAUTH_PORT} (pid {proc.pid}, "
        f"{time.monotonic() - started:.1f}s; log {log_file})"
    )


# ---------------------------------------------------------------- entry points


def _stop(name: str, pid_file: Path, timeout: float = 30) -> None:
    pid = _read_pid(pid_file)
    if pid is None:
        log(f"{name}: not running (no live recorded pid)")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid_alive(pid):
        log(f"{name}: pid {pid} ignored SIGTERM for {timeout:.0f}s, sending SIGKILL")
        os.kill(pid, signal.SIGKILL)
    log(f"{name}: stopped pid {pid}")


def enabled() -> bool:
    return os.environ.get("DRIPDROP_MAIL", "1") != "0"


def mail_up() -> None:
    """Install when missing, configure and start the OAuth2 server, Dovecot and Postfix."""
    if not enabled():
        log("mail: DRIPDROP_MAIL=0, not starting Postfix/Dovecot")
        return
    ensure_packages()
    MAIL.mkdir(parents=True, exist_ok=True)
    tls = ensure_tls()
    oauth_up()
    dovecot_up(tls)
    postfix_up(tls)


def mail_down() -> None:
    """Stop exactly the processes ``mail_up`` recorded (Postfix first: it delivers to Dovecot)."""
    _stop("postfix", postfix_dir() / "queue" / "pid" / "master.pid")
    _stop("dovecot", dovecot_dir() / "run" / "master.pid")
    _stop("oauth", oauth_dir() / "oauth_idp.pid")
    (oauth_dir() / "oauth_idp.pid").unlink(missing_ok=True)


def mail_status() -> None:
    for name, pid_file, ports in (
        ("postfix", postfix_dir() / "queue" / "pid" / "master.pid",
         (SMTP_PORT, SUBMISSION_PORT, SMTPS_PORT)),
        ("dovecot", dovecot_dir() / "run" / "master.pid", (IMAP_PORT, IMAPS_PORT, LMTP_PORT)),
        ("oauth", oauth_dir() / "oauth_idp.pid", (OAUTH_PORT,)),
    ):  # fmt: skip
        pid = _read_pid(pid_file)
        where = ", ".join(f"127.0.0.1:{p}" for p in ports)
        log(f"{name}: {'running pid ' + str(pid) if pid else 'not running'} ({where})")


def client_context() -> ssl.SSLContext:
    """A client TLS context that trusts the test CA (verification on)."""
    return ssl.create_default_context(cafile=str(MAIL / "tls" / "ca.pem"))
