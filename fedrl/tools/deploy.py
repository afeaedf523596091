"""Deployment helpers: credentials, and a local test deployment on loopback.

    python -m fedrl.deploy certs --dir certs --host superlink.example.org --host 10.0.0.5
    python -m fedrl.deploy node-keys --dir keys --count 4
    python -m fedrl.deploy local-up --dir /tmp/fedrl-deploy --nodes 2 [--insecure] [--supernode stock] [--superlink stock]
    python -m fedrl.deploy local-down --dir /tmp/fedrl-deploy

``certs`` writes ``ca.key``/``ca.crt`` and ``server.key``/``server.pem`` (signed by the CA)
whose subject alternative names are ``localhost``, ``127.0.0.1``, ``::1`` and every
``--host`` (DNS names and IP addresses), so SuperNodes and the ``flwr`` CLI can verify
the SuperLink on any of those addresses. ``node-keys`` writes one ECDSA P-384 key pair
per SuperNode in OpenSSH format (``node-I`` and ``node-I.pub``), what
``flower-supernode --auth-supernode-private-key`` and ``flwr supernode register`` take.
Existing files are never overwritten.

``local-up`` starts a SuperLink and N SuperNodes on free loopback ports, by default with
TLS and SuperNode authentication (credentials made as above and the keys registered
with ``flwr supernode register``), writes a ``flwr`` connection named ``local-deployment``
into ``<dir>/flwr-home/config.toml`` and the PIDs into ``<dir>/pids.json``;
``local-down`` stops exactly those processes (and their children) by PID. Its SuperLink
is ``fedrl-superlink`` (:mod:`fedrl.transport.superlink`) and its SuperNodes ``fedrl-supernode``
(:mod:`fedrl.transport.supernode`) unless ``--superlink stock`` or ``--supernode stock`` asks for
Flower's ``flower-superlink`` or ``flower-supernode``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedrl.tools.processes import free_port, sigterm_exits, stop_pids, wait_for_port

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
VALID_DAYS = 825
CONNECTION = "local-deployment"
# How local-up starts a SuperNode: fedrl's (adaptive polls, the ClientApp run inside the
# node; see fedrl.transport.supernode), its polls with Flower's per-message ClientApp processes, or
# Flower's stock flower-supernode.
SUPERNODES = {
    "fedrl": [sys.executable, "-m", "fedrl.transport.cli", "supernode"],
    "fedrl-polls": [sys.executable, "-m", "fedrl.transport.cli", "supernode", "--stock-clientapp"],
    "stock": ["flower-supernode"],
}
# How local-up starts the SuperLink: fedrl's (idle middleware skipped, pulls held; see fedrl.transport.superlink)
# or Flower's stock flower-superlink.
SUPERLINKS = {
    "fedrl": [sys.executable, "-m", "fedrl.transport.cli", "superlink"],
    "stock": ["flower-superlink"],
}


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        if not host or any(c.isspace() or c in "/:" for c in host):
            raise ValueError(f"--host {host!r} is neither an IP address nor a DNS name") from None
        return x509.DNSName(host)


def _write_new(path: Path, data: bytes, private: bool = False) -> None:
    if path.exists():
        raise FileExistsError(f"{path} exists; fedrl.deploy never overwrites credentials (remove it first)")
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def make_certificates(outdir: Path, hosts: list[str]) -> dict[str, Path]:
    """Write a CA and a server certificate for ``hosts`` (plus the loopback names) into ``outdir``."""
    names = list(dict.fromkeys([*DEFAULT_HOSTS, *hosts]))
    sans = [_san(h) for h in names]
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {k: outdir / n for k, n in (("ca_key", "ca.key"), ("ca_cert", "ca.crt"), ("server_key", "server.key"),
                                         ("server_cert", "server.pem"))}
    clash = [str(p) for p in paths.values() if p.exists()]
    if clash:
        raise FileExistsError(f"{', '.join(clash)} exist; fedrl.deploy never overwrites credentials")
    now = dt.datetime.now(dt.UTC)
    ca_key, server_key = _key(), _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedrl CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    server_cert = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[-1])]))
                   .issuer_name(ca_name).public_key(server_key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
                   .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                   .sign(ca_key, hashes.SHA256()))
    _write_new(paths["ca_key"], _pem_key(ca_key), private=True)
    _write_new(paths["ca_cert"], ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_new(paths["server_key"], _pem_key(server_key), private=True)
    _write_new(paths["server_cert"], server_cert.public_bytes(serialization.Encoding.PEM))
    return paths


def make_node_keys(outdir: Path, count: int, start: int = 0) -> list[tuple[Path, Path]]:
    """Write ``count`` ECDSA P-384 key pairs ``node-I``/``node-I.pub`` (OpenSSH format)."""
    if count < 1:
        raise ValueError(f"--count must be >= 1, got {count}")
    outdir.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(start, start + count):
        private, public = outdir / f"node-{i}", outdir / f"node-{i}.pub"
        key = ec.generate_private_key(ec.SECP384R1())
        _write_new(private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                              serialization.NoEncryption()), private=True)
        _write_new(public, key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                         serialization.PublicFormat.OpenSSH) + b"\n")
        pairs.append((private, public))
    return pairs


class LocalDeployment:
    """A SuperLink and ``nodes`` SuperNodes on loopback (deployment engine, not simulation).

    ``secure`` (the default) means TLS with a fresh CA and SuperNode authentication
    with registered keys; ``secure=False`` is ``--insecure`` and is for loopback tests
    only. Every process is started in its own session and stopped by PID.
    """

    def __init__(self, workdir: Path, nodes: int, secure: bool = True, supernode: str = "fedrl",
                 superlink: str = "fedrl") -> None:
        if nodes < 1:
            raise ValueError(f"--nodes must be >= 1, got {nodes}")
        self.dir = workdir.resolve()
        self.nodes = nodes
        self.secure = secure
        if supernode not in SUPERNODES:
            raise ValueError(f"--supernode {supernode!r} is not one of {', '.join(SUPERNODES)}")
        self.supernode = supernode
        if superlink not in SUPERLINKS:
            raise ValueError(f"--superlink {superlink!r} is not one of {', '.join(SUPERLINKS)}")
        self.superlink = superlink
        self.home = self.dir / "flwr-home"
        self.logs = self.dir / "logs"
        self.port = 0
        self.procs: dict[str, subprocess.Popen] = {}
        bindir = str(Path(sys.executable).parent)
        self.env = {**os.environ, "FLWR_HOME": str(self.home), "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
                    "FLWR_DISABLE_UPDATE_CHECK": "1"}

    def _tls_args(self, server: bool) -> list[str]:
        if not self.secure:
            return ["--insecure"]
        certs = self.dir / "certs"
        if server:
            return ["--ssl-ca-certfile", str(certs / "ca.crt"), "--ssl-certfile", str(certs / "server.pem"),
                    "--ssl-keyfile", str(certs / "server.key"), "--enable-supernode-auth"]
        return ["--root-certificates", str(certs / "ca.crt")]

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "w") as out:
            proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        self._save_pids()
        return proc

    def _save_pids(self) -> None:
        (self.dir / "pids.json").write_text(json.dumps({k: p.pid for k, p in self.procs.items()}, indent=2))

    def node_key(self, i: int) -> Path:
        """The private key of SuperNode ``i`` (secure mode)."""
        return self.dir / "keys" / f"node-{i}"

    def register(self, public_key: Path) -> subprocess.CompletedProcess:
        """``flwr supernode register`` a public key with this SuperLink."""
        return subprocess.run(["flwr", "supernode", "register", str(public_key), CONNECTION], env=self.env,
                              capture_output=True, text=True, check=False)

    def start_supernode(self, i: int, key: Path | None = None, name: str | None = None,
                        max_retries: int | None = None) -> subprocess.Popen:
        """Start a SuperNode for partition ``i``, logged and tracked as ``name`` (default ``supernode-i``).

        ``key`` overrides its authentication key; ``max_retries`` bounds its connection attempts.
        """
        cmd = [*SUPERNODES[self.supernode], *self._tls_args(server=False), "--superlink", f"127.0.0.1:{self.port}",
               "--node-config", f"partition-id={i} num-partitions={self.nodes}",
               "--host", "127.0.0.1", "--port", str(free_port())]
        if self.secure:
            cmd += ["--auth-supernode-private-key", str(key or self.node_key(i))]
        if max_retries is not None:
            cmd += ["--max-retries", str(max_retries)]
        return self._spawn(name or f"supernode-{i}", cmd)

    def start(self) -> LocalDeployment:
        """Start everything; returns self. Raises with the log's tail if a process fails."""
        for d in (self.dir, self.home, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        if self.secure:
            if not (self.dir / "certs" / "ca.crt").exists():
                make_certificates(self.dir / "certs", [])
            if not self.node_key(0).exists():
                make_node_keys(self.dir / "keys", self.nodes)
        self.port = free_port()
        tls = (f'root-certificates = "{self.dir / "certs" / "ca.crt"}"' if self.secure else "insecure = true")
        (self.home / "config.toml").write_text(f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
                                               f'address = "127.0.0.1:{self.port}"\n{tls}\n')
        link = self._spawn("superlink", [*SUPERLINKS[self.superlink], *self._tls_args(server=True), "--host", "127.0.0.1",
                                         "--port", str(self.port), "--isolation", "subprocess",
                                         "--disable-runtime-dependency-installation"])
        wait_for_port(self.port, link, self.logs / "superlink.log")
        if self.secure:
            for i in range(self.nodes):
                done = self.register(self.node_key(i).with_suffix(".pub"))
                if done.returncode != 0:
                    raise RuntimeError(f"registering node {i} failed: {done.stdout}{done.stderr}")
        for i in range(self.nodes):
            self.start_supernode(i)
        return self

    def stop(self) -> None:
        """Stop every process this deployment started (SIGTERM, then SIGKILL after 15 s)."""
        stop_pids({k: p.pid for k, p in self.procs.items()})
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
        self.procs.clear()

    def __enter__(self) -> LocalDeployment:
        self._sigterm = sigterm_exits()  # a SIGTERM mid-block still stops what was started
        self._sigterm.__enter__()
        try:
            return self.start()
        except BaseException:
            self.stop()
            self._sigterm.__exit__(None, None, None)
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self._sigterm.__exit__(None, None, None)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m fedrl.deploy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    certs = sub.add_parser("certs", help="a CA and a SuperLink certificate")
    certs.add_argument("--dir", type=Path, required=True)
    certs.add_argument("--host", action="append", default=[], help="a DNS name or IP of the SuperLink (repeatable)")
    keys = sub.add_parser("node-keys", help="SuperNode authentication key pairs")
    keys.add_argument("--dir", type=Path, required=True)
    keys.add_argument("--count", type=int, required=True)
    keys.add_argument("--start", type=int, default=0, help="index of the first key (default 0)")
    up = sub.add_parser("local-up", help="SuperLink + N SuperNodes on loopback")
    up.add_argument("--dir", type=Path, required=True)
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument("--insecure", action="store_true", help="no TLS, no node authentication (loopback tests only)")
    up.add_argument("--supernode", choices=sorted(SUPERNODES), default="fedrl",
                    help="fedrl (default): fedrl-supernode; fedrl-polls: its polls with Flower's per-message "
                         "ClientApp processes; stock: flower-supernode")
    up.add_argument("--superlink", choices=sorted(SUPERLINKS), default="fedrl",
                    help="fedrl (default): fedrl-superlink; stock: flower-superlink")
    down = sub.add_parser("local-down", help="stop what local-up started")
    down.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "certs":
            paths = make_certificates(args.dir, args.host)
            print("\n".join(f"{k}: {v}" for k, v in paths.items()))
        elif args.command == "node-keys":
            for private, public in make_node_keys(args.dir, args.count, args.start):
                print(f"{private}  {public}")
        elif args.command == "local-up":
            dep = LocalDeployment(args.dir, args.nodes, secure=not args.insecure, supernode=args.supernode,
                                  superlink=args.superlink)
            try:
                dep.start()
            except BaseException:
                dep.stop()
                raise
            print(f"SuperLink on 127.0.0.1:{dep.port} ({'TLS + node auth' if dep.secure else 'insecure'}), "
                  f"{args.nodes} SuperNodes; logs in {dep.logs}\n"
                  f"  export FLWR_HOME={dep.home}\n  flwr run . {CONNECTION} --stream\n"
                  f"  python -m fedrl.deploy local-down --dir {args.dir}")
        else:
            pids_file = args.dir / "pids.json"
            if not pids_file.is_file():
                parser.error(f"{pids_file} not found: nothing started by local-up in {args.dir}")
            stop_pids(json.loads(pids_file.read_text()))
            pids_file.unlink()
            print(f"stopped the processes listed in {pids_file}")
    except (ValueError, FileExistsError, RuntimeError) as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
