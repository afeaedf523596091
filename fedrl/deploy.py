"""Credentials for a real deployment: a CA, a SuperLink certificate and SuperNode keys.

    python -m fedrl.deploy certs --dir certs --host superlink.example.org --host 10.0.0.5
    python -m fedrl.deploy node-keys --dir keys --count 4

``certs`` writes ``ca.key``/``ca.crt`` and ``server.key``/``server.pem`` (signed by the CA)
whose subject alternative names are ``localhost``, ``127.0.0.1``, ``::1`` and every
``--host`` (DNS names and IP addresses), so SuperNodes and the ``flwr`` CLI can verify
the SuperLink on any of those addresses. ``node-keys`` writes one ECDSA P-384 key pair
per SuperNode in OpenSSH format (``node-I`` and ``node-I.pub``), what
``flower-supernode --auth-supernode-private-key`` and ``flwr supernode register`` take.
Existing files are never overwritten.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
VALID_DAYS = 825


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
    args = parser.parse_args(argv)
    try:
        if args.command == "certs":
            paths = make_certificates(args.dir, args.host)
            print("\n".join(f"{k}: {v}" for k, v in paths.items()))
        else:
            for private, public in make_node_keys(args.dir, args.count, args.start):
                print(f"{private}  {public}")
    except (ValueError, FileExistsError) as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
