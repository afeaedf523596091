"""Deployment credentials: certificate SANs and chain, SuperNode key format, no overwrite."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from fedrl.tools.deploy import LocalDeployment, main, make_certificates, make_node_keys


def test_server_certificate_has_the_sans_and_is_signed_by_the_ca(tmp_path):
    paths = make_certificates(tmp_path, ["superlink.example.org", "10.0.0.5"])
    ca = x509.load_pem_x509_certificate(paths["ca_cert"].read_bytes())
    server = x509.load_pem_x509_certificate(paths["server_cert"].read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "superlink.example.org"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address(a) for a in ("127.0.0.1", "::1",
                                                                                               "10.0.0.5")}
    assert server.issuer == ca.subject
    ca.public_key().verify(server.signature, server.tbs_certificate_bytes, padding.PKCS1v15(),
                           server.signature_hash_algorithm)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert paths["server_key"].stat().st_mode & 0o777 == 0o600


def test_node_keys_load_as_flower_expects(tmp_path):
    pairs = make_node_keys(tmp_path, 2)
    assert [p.name for p, _ in pairs] == ["node-0", "node-1"]
    for private, public in pairs:
        key = load_ssh_private_key(private.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
        assert load_ssh_public_key(public.read_bytes()).public_numbers() == key.public_key().public_numbers()


def test_credentials_are_never_overwritten(tmp_path, capsys):
    make_node_keys(tmp_path, 1)
    with pytest.raises(FileExistsError):
        make_node_keys(tmp_path, 1)
    make_certificates(tmp_path / "c", [])
    with pytest.raises(SystemExit):
        main(["certs", "--dir", str(tmp_path / "c")])
    assert "never overwrites" in capsys.readouterr().err


def test_bad_host_and_count_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["certs", "--dir", str(tmp_path), "--host", "http://x"])
    assert "neither an IP address nor a DNS name" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["node-keys", "--dir", str(tmp_path), "--count", "0"])
    assert "--count must be >= 1" in capsys.readouterr().err


def test_stop_pids_reaches_descendants_in_other_sessions(tmp_path):
    import subprocess
    import sys

    from fedrl.tools.processes import descendants, stop_pids

    # The child starts a grandchild in a session of its own, as Flower's SuperExec does.
    script = ("import subprocess, sys, time; "
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True); "
              "time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.monotonic() + 10
    while not (found := descendants([parent.pid])) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(found) == 1
    stop_pids({"parent": parent.pid}, grace_s=5)
    parent.wait(timeout=5)
    time.sleep(0.2)
    assert not Path(f"/proc/{found[0]}").exists() or "Z" in Path(f"/proc/{found[0]}/stat").read_text().split()[2]


def test_an_unreaped_child_does_not_count_as_running_and_a_stubborn_one_is_killed():
    import signal
    import subprocess
    import sys

    from fedrl.tools.processes import _running, stop_pids

    quick = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{quick.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not _running([quick.pid], [quick.pid])  # a zombie, until we reap it
    quick.wait()
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"],
                                start_new_session=True)
    time.sleep(0.5)
    assert _running([stubborn.pid], [])
    stop_pids({"stubborn": stubborn.pid}, grace_s=1)
    assert stubborn.wait(timeout=10) == -signal.SIGKILL


def test_unknown_superlink_or_supernode_names_the_allowed_ones(tmp_path):
    with pytest.raises(ValueError, match="--superlink 'fast' is not one of fedrl, stock"):
        LocalDeployment(tmp_path, nodes=2, superlink="fast")
    with pytest.raises(ValueError, match="--supernode 'fast' is not one of fedrl, fedrl-polls, stock"):
        LocalDeployment(tmp_path, nodes=2, supernode="fast")
