"""A real kube-apiserver 1.20 with its own etcd on loopback, for tests.

Design
------
* The binaries are real: ``etcd`` 3.4 from Debian's ``etcd-server`` package and ``kube-apiserver`` 1.20.2 built
  from Debian's ``kubernetes`` source package by ``scripts/kube-apiserver.sh``, which caches it outside the
  repository (``${FLOWLENS_CACHE:-/var/cache/flowlens}/kube-apiserver-1.20.2/kube-apiserver``).
  :func:`apiserver_binary` finds it (``FLOWLENS_KUBE_APISERVER`` overrides) so that tests can skip when absent.
* :func:`running_apiserver` starts one etcd and one kube-apiserver per use, both bound to 127.0.0.1 on free
  ports picked at random, with all their state (etcd data, certificates, keys, token file, logs) in one
  temporary folder (mode 0700) that is removed afterwards. Both processes are stopped by PID (SIGTERM, then
  SIGKILL after a grace period), whatever happens in the ``with`` block.
* TLS is real and verifiable: a throw-away CA signs the serving certificate (SAN ``IP:127.0.0.1``,
  ``DNS:localhost``); :attr:`ApiServer.ca_file` is that CA, so clients keep ``verify_ssl`` on.
  Keys are made with the ``openssl`` command, or with the ``cryptography`` package when there is no ``openssl``.
* Authentication is by static bearer tokens (``--token-auth-file``); the admin token is in ``system:masters``.
  Authorization is ``RBAC``, so other users get exactly what the test grants them with Roles and bindings.
  kube-apiserver reads the token file once at start: :meth:`ApiServer.add_token` rewrites the file and then
  restarts the apiserver (not etcd, and all data stays). Tokens known before the start are cheaper: pass them
  as ``tokens=`` to :func:`running_apiserver`.
* :meth:`ApiServer.restart` stops and starts the apiserver process alone, on the same port with the same etcd:
  objects and resourceVersions stay, clients see their connections (and watch streams) cut, then refused
  for about 2.5 s, then served again; a watch resumed from its last resourceVersion carries on.
* There is no controller-manager, scheduler or kubelet: nothing schedules pods, fills in pod IPs, creates
  Endpoints/EndpointSlices or ServiceAccounts, or fills in the aggregated ClusterRoles ``view``/``edit``/``admin``
  (they exist but grant nothing: bind your own ClusterRole). Tests write what they need, e.g.
  ``patch_namespaced_pod_status`` for ``podIP``.
* Timing on 2 cores: etcd is healthy in ~0.5 s, kube-apiserver ready (``/readyz`` and the ``default``
  namespace) in ~2.5 s. On SIGTERM it waits for open watches (up to 60 s), hence the SIGKILL after a grace.
  The temporary folder is on /dev/shm when possible: etcd fsyncs every write.

What 1.20 serves and newer clusters do not (or differently)
-----------------------------------------------------------
* EndpointSlice is ``discovery.k8s.io/v1beta1`` only (``v1`` came in 1.21): ``/apis/discovery.k8s.io/v1/...``
  answers 404. v1beta1 slices carry ``topology`` per endpoint (``kubernetes.io/hostname``,
  ``topology.kubernetes.io/zone``) instead of v1's ``nodeName``/``zone`` fields.
* Flags needed besides the obvious ones: ``--service-account-issuer``/``--service-account-signing-key-file``
  (required since 1.20: it refuses to start without them), ``--disable-admission-plugins=ServiceAccount``
  (otherwise pods are refused with 403 ``serviceaccount "default" not found``: no controller creates it),
  ``--endpoint-reconciler-type=none`` (otherwise the log fills with errors every 10 s: it tries to publish
  127.0.0.1 as the ``kubernetes`` service's endpoint, which validation refuses as loopback) and ``--cert-dir``
  (the default is ``/var/run/kubernetes``). ``--insecure-port`` no longer has any effect in 1.20.
* ``--service-account-key-file`` must be a public key (or RSA/EC-format private key): 1.20 does not read
  PKCS#8 private keys there, so :func:`make_pki` writes ``sa.pub`` next to ``sa.key``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from kubernetes import client as k8s_client

KUBE_VERSION = "1.20.2"
ADMIN_USER = "flowlens-admin"
READY_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0


def default_binary_path() -> Path:
    """Where ``scripts/kube-apiserver.sh`` caches the binary (whether or not it is there)."""
    cache = Path(os.environ.get("FLOWLENS_CACHE", "/var/cache/flowlens"))
    return cache / f"kube-apiserver-{KUBE_VERSION}" / "kube-apiserver"


def apiserver_binary() -> Path | None:
    """The kube-apiserver binary to test against, or None when there is none (tests then skip).

    ``FLOWLENS_KUBE_APISERVER`` names it explicitly; otherwise the cache of ``scripts/kube-apiserver.sh``.
    """
    explicit = os.environ.get("FLOWLENS_KUBE_APISERVER")
    path = Path(explicit) if explicit else default_binary_path()
    try:
        return path if path.is_file() and os.access(path, os.X_OK) else None
    except OSError:  # e.g. a cache folder (mode 0700) that this user may not enter
        return None


def etcd_binary() -> Path | None:
    """Debian's ``etcd`` (package etcd-server), or None."""
    found = shutil.which("etcd")
    return Path(found) if found else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Token:
    """One line of the static token file: a bearer token and who it authenticates as."""

    token: str
    user: str
    groups: tuple[str, ...] = ()
    uid: str = ""

    def csv_line(self) -> str:
        for value in (self.token, self.user, self.uid, *self.groups):
            if any(c in value for c in ',"\n'):
                raise ValueError(f"token file values may not contain commas, quotes or newlines: {value!r}")
        line = f"{self.token},{self.user},{self.uid or self.user}"
        return f'{line},"{",".join(self.groups)}"' if self.groups else line


# --- certificates and keys -------------------------------------------------------------------------------


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, text=True)


def _make_pki_openssl(d: Path) -> None:
    ec = ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")
    for name in ("ca", "server", "sa"):
        _openssl("genpkey", *ec, "-out", str(d / f"{name}.key"))
    _openssl("pkey", "-in", str(d / "sa.key"), "-pubout", "-out", str(d / "sa.pub"))
    _openssl("req", "-x509", "-new", "-key", str(d / "ca.key"), "-subj", "/CN=flowlens-test-ca", "-days", "2",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-out", str(d / "ca.crt"))
    _openssl("req", "-new", "-key", str(d / "server.key"), "-subj", "/CN=kube-apiserver", "-out", str(d / "server.csr"))
    (d / "server.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n"
    )
    _openssl("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
             "-CAcreateserial", "-days", "2", "-extfile", str(d / "server.ext"), "-out", str(d / "server.crt"))


def _make_pki_cryptography(d: Path) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    keys = {name: ec.generate_private_key(ec.SECP256R1()) for name in ("ca", "server", "sa")}
    for name, key in keys.items():
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        (d / f"{name}.key").write_bytes(pem)
    pub = keys["sa"].public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    (d / "sa.pub").write_bytes(pub)
    now = datetime.datetime.now(datetime.UTC)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flowlens-test-ca")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(keys["ca"].public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(keys["ca"], hashes.SHA256())
    )
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name).public_key(keys["server"].public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
            x509.DNSName("kubernetes.default.svc"),
        ]), critical=False)
        .sign(keys["ca"], hashes.SHA256())
    )
    (d / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "server.crt").write_bytes(server.public_bytes(serialization.Encoding.PEM))


def make_pki(d: Path) -> None:
    """Write ca.{crt,key}, server.{crt,key} (serving cert for 127.0.0.1) and sa.{key,pub} to d (EC P-256).

    kube-apiserver 1.20 reads PKCS#8 private keys but not as ``--service-account-key-file``: that gets sa.pub.
    """
    if shutil.which("openssl"):
        _make_pki_openssl(d)
        return
    try:
        _make_pki_cryptography(d)
    except ImportError as e:
        raise RuntimeError("need the openssl command or the cryptography package to make test keys") from e


# --- kubeconfig ------------------------------------------------------------------------------------------


def write_kubeconfig(path: Path, *, server: str, token: str, ca_file: Path | None = None,
                     name: str = "flowlens-test") -> Path:
    """Write a kubeconfig (one cluster, user and context, all called ``name``) for a bearer token.

    With ``ca_file`` the CA is embedded (``certificate-authority-data``), so the file stands alone; without it
    TLS verification is off. Readable by ``kubectl --kubeconfig`` and ``kubernetes.config.load_kube_config``.
    """
    cluster: dict[str, object] = {"server": server}
    if ca_file is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_file.read_bytes()).decode()
    else:
        cluster["insecure-skip-tls-verify"] = True
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
        "preferences": {},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


# --- processes -------------------------------------------------------------------------------------------


def _stop(proc: subprocess.Popen[bytes] | None, grace_s: float = STOP_GRACE_S) -> None:
    """Stop one child by its PID: SIGTERM, then SIGKILL after ``grace_s`` (at once if 0); reap it either way."""
    if proc is None or proc.poll() is not None:
        return
    try:
        if grace_s <= 0:
            raise subprocess.TimeoutExpired(proc.args, 0)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class StartError(RuntimeError):
    """etcd or kube-apiserver did not come up; the message ends with the tail of its log."""


@dataclass
class Etcd:
    """One etcd member on 127.0.0.1 with its data in ``data_dir``."""

    binary: Path
    data_dir: Path
    log_path: Path
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        args = [
            str(self.binary), "--name=flowlens-test", f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.url}", f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=flowlens-test={peer}", "--initial-cluster-state=new",
            f"--initial-cluster-token=flowlens-{uuid.uuid4().hex[:8]}",
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartError(f"etcd exited with {self.proc.returncode}:\n{_tail(self.log_path)}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                    if b'"health":"true"' in r.read():
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        self.stop()
        raise StartError(f"etcd not healthy after {timeout_s:.0f} s:\n{_tail(self.log_path)}")

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None


@dataclass
class ApiServer:
    """A running kube-apiserver (see :func:`running_apiserver`). TLS verifies against :attr:`ca_file`."""

    binary: Path
    workdir: Path
    etcd: Etcd
    admin_token: str
    tokens: list[Token]
    extra_args: Sequence[str] = ()
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    started_in_s: float = 0.0  # how long the last start took until ready

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    @property
    def log_path(self) -> Path:
        return self.workdir / "kube-apiserver.log"

    @property
    def token_file(self) -> Path:
        return self.workdir / "tokens.csv"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _args(self) -> list[str]:
        pki = self.workdir / "pki"
        return [
            str(self.binary),
            f"--etcd-servers={self.etcd.url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'server.crt'}", f"--tls-private-key-file={pki / 'server.key'}",
            f"--token-auth-file={self.token_file}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--disable-admission-plugins=ServiceAccount",
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            *self.extra_args,
        ]

    def _write_tokens(self) -> None:
        self.token_file.write_text("".join(t.csv_line() + "\n" for t in self.tokens))
        self.token_file.chmod(0o600)

    def get(self, path: str, token: str | None = None, timeout_s: float = 2.0) -> tuple[int, bytes]:
        """GET ``path`` with a bearer token (admin by default): (HTTP status, body)."""
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {token or self.admin_token}"})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s, context=self.ssl_context()) as r:
                return int(r.status), r.read()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read()

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start the process and wait until ``/readyz`` is ok and the ``default`` namespace exists."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("kube-apiserver is already running")
        self._write_tokens()
        t0 = time.monotonic()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self._args(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = t0 + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartError(f"kube-apiserver exited with {self.proc.returncode}:\n{_tail(self.log_path)}")
            try:
                if self.get("/readyz")[0] == 200 and self.get("/api/v1/namespaces/default")[0] == 200:
                    self.started_in_s = time.monotonic() - t0
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        self.stop()
        raise StartError(f"kube-apiserver not ready after {timeout_s:.0f} s:\n{_tail(self.log_path)}")

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM, SIGKILL after ``grace_s`` (0: SIGKILL at once, like a crash).

        On SIGTERM kube-apiserver 1.20 waits for long-running requests (open watches) for up to 60 s, so with
        a watch open it is the SIGKILL that ends it; without one it exits in about a second.
        """
        _stop(self.proc, grace_s)
        self.proc = None

    def restart(self, timeout_s: float = READY_TIMEOUT_S, *, grace_s: float = STOP_GRACE_S) -> None:
        """Stop and start the apiserver process only: same port, same etcd (so all objects stay).

        Open watches are cut (the client sees the stream end or a protocol error, then connection refused
        until the new process listens). A watch resumed with a resourceVersion from before the restart may get
        410 Gone ("too old resource version"): the new watch cache starts at etcd's current revision.
        """
        self.stop(grace_s)
        self.start(timeout_s)

    def add_token(self, token: str, user: str, groups: Iterable[str] = (), *, restart: bool = True) -> None:
        """Make ``token`` authenticate as ``user`` in ``groups``.

        kube-apiserver reads ``--token-auth-file`` only at start, so this rewrites the file and, unless
        ``restart=False`` (to add several, then call :meth:`restart` once), restarts the apiserver. Grant the user
        permissions with RBAC objects as usual (they live in etcd and survive the restart).
        """
        self.tokens = [t for t in self.tokens if t.token != token] + [Token(token, user, tuple(groups))]
        if restart:
            self.restart()
        else:
            self._write_tokens()

    def kubeconfig(self, path: Path, token: str | None = None) -> Path:
        """Write a kubeconfig for this server and ``token`` (admin by default), CA embedded; returns ``path``."""
        return write_kubeconfig(path, server=self.url, token=token or self.admin_token, ca_file=self.ca_file)

    def client_configuration(self, token: str | None = None) -> k8s_client.Configuration:
        """A ``kubernetes.client.Configuration`` for ``token`` (admin by default), verifying TLS with the CA."""
        from kubernetes import client

        conf = client.Configuration()
        conf.host = self.url
        conf.api_key = {"authorization": token or self.admin_token}
        conf.api_key_prefix = {"authorization": "Bearer"}
        conf.ssl_ca_cert = str(self.ca_file)
        conf.verify_ssl = True
        return conf


def _temp_base() -> str | None:
    """/dev/shm when usable (etcd fsyncs every write: much faster on tmpfs), else the default temp folder."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None


@contextlib.contextmanager
def running_apiserver(
    binary: Path,
    *,
    tokens: Iterable[Token] = (),
    extra_args: Sequence[str] = (),
    etcd: Path | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> Iterator[ApiServer]:
    """Start etcd and kube-apiserver on 127.0.0.1 (free ports), yield the ready :class:`ApiServer`, stop both.

    ``tokens`` are extra static tokens (see :class:`Token`); the admin token (user ``flowlens-admin``, group
    ``system:masters``) is always there. ``extra_args`` are appended to the kube-apiserver command line.
    Everything lives in one temporary folder (mode 0700) that is removed at the end.
    """
    etcd_path = etcd or etcd_binary()
    if etcd_path is None:
        raise FileNotFoundError("no etcd: apt-get install etcd-server (or run scripts/kube-apiserver.sh)")
    workdir = Path(tempfile.mkdtemp(prefix="flowlens-kube-", dir=_temp_base()))  # mkdtemp: mode 0700
    etcd_proc: Etcd | None = None
    server: ApiServer | None = None
    try:
        (workdir / "pki").mkdir(mode=0o700)
        make_pki(workdir / "pki")
        etcd_proc = Etcd(etcd_path, workdir / "etcd", workdir / "etcd.log")
        etcd_proc.start(ready_timeout_s)
        admin = Token(uuid.uuid4().hex, ADMIN_USER, ("system:masters",))
        server = ApiServer(binary, workdir, etcd_proc, admin.token, [admin, *tokens], tuple(extra_args))
        server.start(ready_timeout_s)
        yield server
    finally:
        if server is not None:
            server.stop()
        if etcd_proc is not None:
            etcd_proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


ZONE = "topology.kubernetes.io/zone"
INSTANCE_TYPE = "node.kubernetes.io/instance-type"


@contextlib.contextmanager
def apiserver_for_tests() -> Iterator[ApiServer]:
    """A running apiserver for a test module, or the module skipped with how to get one."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("needs root (the kube-apiserver cache is root's, mode 0700)")
    binary = apiserver_binary()
    if binary is None:
        pytest.skip("no kube-apiserver 1.20.2: run scripts/kube-apiserver.sh (or set FLOWLENS_KUBE_APISERVER)")
    if etcd_binary() is None:
        pytest.skip("no etcd: run scripts/kube-apiserver.sh (installs etcd-server)")
    with running_apiserver(binary) as server:
        yield server
