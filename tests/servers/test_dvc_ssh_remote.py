"""A team's DVC remote over SSH, against a real sshd on 127.0.0.1: push, lose everything, pull.

The sshd runs from a config in a temp dir with its own host key and one authorized client key,
and the client logs in as the current user, so this works as root and as anyone else.

dvc-ssh does not check the server's host key: sshfs, under it, connects with
`known_hosts=None`, and DVC's config has no key to change that. So no known_hosts file here.
"""

from __future__ import annotations

import getpass
import json
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import git, run
from tests.servers.conftest import free_ports

SBIN_PATH = os.pathsep.join(["/usr/sbin", "/usr/local/sbin", os.environ.get("PATH", "")])


@dataclass(frozen=True)
class SshServer:
    port: int
    user: str
    keyfile: Path
    home: Path  # an empty HOME for `dvc`: asyncssh reads ~/.ssh/config, keep the user's out


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        capture_output=True,
    )


def _wait_for_port(port: int, server: subprocess.Popen, log: Path, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"sshd exited with {server.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"sshd did not accept connections on 127.0.0.1:{port}:\n{log.read_text()}")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> Iterator[SshServer]:
    sshd_bin = shutil.which("sshd", path=SBIN_PATH)  # absolute: sshd re-executes itself
    if sshd_bin is None or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH server not installed; run `make system-packages`")
    if os.geteuid() == 0:  # sshd started by root chroots its unprivileged child here
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    folder = tmp_path_factory.mktemp("sshd")
    host_key, client_key = folder / "host_key", folder / "client_key"
    _keygen(host_key)
    _keygen(client_key)
    authorized_keys = folder / "authorized_keys"
    shutil.copy(client_key.with_suffix(".pub"), authorized_keys)

    home = folder / "home"
    home.mkdir()

    port = free_ports(1)[0]
    config = folder / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\n"
        f"Port {port}\n"
        f"HostKey {host_key}\n"
        f"PidFile {folder / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized_keys}\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
        "UsePAM no\n"
        "StrictModes no\n"  # tmp dirs are not laid out as sshd wants ~/.ssh to be
        "Subsystem sftp internal-sftp\n"  # what dvc-ssh speaks
    )
    log = folder / "sshd.log"
    with log.open("w") as log_file:
        server = subprocess.Popen(
            [sshd_bin, "-D", "-e", "-f", str(config)], stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        _wait_for_port(port, server, log)
        yield SshServer(port=port, user=getpass.getuser(), keyfile=client_key, home=home)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _dvc(repo: Path, server: SshServer, *args: str) -> subprocess.CompletedProcess:
    return run(["dvc", *args], repo, HOME=str(server.home), DVC_NO_ANALYTICS="1")


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"
    return result


def _write_data(folder: Path) -> dict[str, bytes]:
    """A few KB in a few files, one of them in a subfolder."""
    noise = random.Random(0)
    files = {
        "labels.csv": "".join(f"{i},{i % 10}\n" for i in range(300)).encode(),
        "images/0.bin": noise.randbytes(4096),
        "images/1.bin": noise.randbytes(2048),
        "README.txt": b"digits, for the SSH remote test\n",
    }
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return files


def _project(root: Path, server: SshServer, remote_url: str) -> tuple[Path, dict[str, bytes]]:
    """A git repo with `data/` tracked by DVC and `team` as its default remote."""
    repo = root / "project"
    repo.mkdir()
    git(repo, "init", "-q")
    _ok(_dvc(repo, server, "init", "-q"))
    files = _write_data(repo / "data")
    _ok(_dvc(repo, server, "add", "-q", "data"))
    _ok(_dvc(repo, server, "remote", "add", "-d", "team", remote_url))
    _ok(_dvc(repo, server, "remote", "modify", "--local", "team", "keyfile", str(server.keyfile)))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "data")
    return repo, files


def test_push_then_pull_into_an_empty_workspace_restores_the_data(tmp_path, sshd):
    storage = tmp_path / "remote"
    url = f"ssh://{sshd.user}@127.0.0.1:{sshd.port}{storage}"
    repo, files = _project(tmp_path, sshd, url)

    _ok(_dvc(repo, sshd, "push"))
    stored = [path for path in storage.rglob("*") if path.is_file()]
    stored_bytes = sorted(path.read_bytes() for path in stored)
    assert all(content in stored_bytes for content in files.values())
    assert len(stored) == len(files) + 1  # and the .dir listing of the folder

    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "data")
    _ok(_dvc(repo, sshd, "pull"))
    for name, content in files.items():
        assert (repo / "data" / name).read_bytes() == content

    assert json.loads(_ok(_dvc(repo, sshd, "status", "--json")).stdout) == {}
    assert json.loads(_ok(_dvc(repo, sshd, "status", "--cloud", "--json")).stdout) == {}


def test_push_to_a_port_without_sshd_fails_naming_the_host(tmp_path, sshd):
    closed = free_ports(1)[0]
    url = f"ssh://{sshd.user}@127.0.0.1:{closed}{tmp_path / 'remote'}"
    repo, _ = _project(tmp_path, sshd, url)

    pushed = _dvc(repo, sshd, "push")
    assert pushed.returncode != 0
    # "ERROR: unexpected error - [Errno 111] Connect call failed ('127.0.0.1', <port>)"
    assert "127.0.0.1" in pushed.stderr and str(closed) in pushed.stderr
    assert not (tmp_path / "remote").exists()
