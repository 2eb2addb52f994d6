"""The offline CA folder: its key, every certificate it issued, and its revocation list.

    CA_DIR/ca.pem      the CA certificate (public; copied to HQ, the broker and each node)
    CA_DIR/ca.key      the CA key (0600): keep this folder off the broker and the nodes,
                       ideally on removable media mounted only to enrol or revoke
    CA_DIR/index.json  every certificate issued: serial, CN, kind, expiry, revocation
    CA_DIR/crl.pem     the current revocation list, copied to the broker's crlfile

The index is the CA's own record, independent of HQ's registry, so a revocation covers
every certificate ever issued to a name, not only the last one.
"""
from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from provisioning import pki
from provisioning.errors import PKIError, StateError
from transport import atomic


@dataclass(frozen=True)
class Issued:
    """One certificate in the CA's index."""

    serial: int
    common_name: str
    kind: str
    not_after: str
    revoked_at: str | None = None
    reason: str = ""


class Authority:
    """An opened CA folder. `create()` makes one; the constructor opens an existing one."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.pair = pki.CertPair(self.directory / "ca.pem", self.directory / "ca.key")
        for path in (self.pair.cert, self.pair.key):
            if not path.exists():
                raise StateError(f"{path}: missing; is the offline CA folder mounted? (made by alpr-provision ca init)")
        self.index_path = self.directory / "index.json"
        self.crl_path = self.directory / "crl.pem"

    @classmethod
    def create(cls, directory: Path, name: str = "ALPR offline CA") -> Authority:
        """Create a new CA folder; refuses to overwrite an existing CA."""
        directory = Path(directory)
        if (directory / "ca.key").exists():
            raise StateError(f"{directory / 'ca.key'}: a CA already exists here; refusing to replace it")
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        pki.create_ca(directory, name)
        authority = cls(directory)
        authority._save([], crl_number=0)
        authority.write_crl()
        return authority

    @property
    def cert(self) -> x509.Certificate:
        return pki.load_cert(self.pair.cert)

    # -- index ----------------------------------------------------------------------------
    def _load(self) -> tuple[list[Issued], int]:
        try:
            raw = json.loads(self.index_path.read_text())
            return [Issued(**{**e, "serial": int(e["serial"], 16)}) for e in raw["certs"]], int(raw["crl_number"])
        except FileNotFoundError:
            return [], 0
        except (ValueError, KeyError, TypeError) as exc:
            raise PKIError(f"{self.index_path}: corrupt CA index ({exc})") from exc

    def _save(self, certs: list[Issued], *, crl_number: int) -> None:
        data = {"crl_number": crl_number,
                "certs": [{**e.__dict__, "serial": format(e.serial, "x")} for e in certs]}
        atomic.write_bytes(self.index_path, (json.dumps(data, indent=1) + "\n").encode(), 0o600)

    def issued(self) -> list[Issued]:
        """Every certificate this CA issued, oldest first."""
        return self._load()[0]

    # -- issuing --------------------------------------------------------------------------
    def sign(self, csr: x509.CertificateSigningRequest, *, server_names: list[str] | None = None,
             days: int = pki.CLIENT_DAYS, not_before: dt.datetime | None = None,
             uris: list[str] | None = None) -> x509.Certificate:
        """Sign a CSR and record the certificate in the index (`uris`: see pki.sign_csr)."""
        cert = pki.sign_csr(self.pair, csr, server_names=server_names, days=days, not_before=not_before, uris=uris)
        certs, number = self._load()
        certs.append(Issued(cert.serial_number, pki.common_name(cert.subject), "server" if server_names else "client",
                            cert.not_valid_after_utc.isoformat()))
        self._save(certs, crl_number=number)
        return cert

    def issue(self, common_name: str, directory: Path, *, stem: str, server_names: list[str] | None = None,
              days: int = pki.CLIENT_DAYS) -> pki.CertPair:
        """Make a key pair (on this machine) and a certificate: for the broker and HQ workers only."""
        key = pki.new_key()
        cert = self.sign(pki.make_csr(common_name, key), server_names=server_names, days=days)
        pair = pki.CertPair(Path(directory) / f"{stem}.pem", Path(directory) / f"{stem}.key")
        pki.write_private_key(pair.key, key)
        pki.write_cert(pair.cert, cert)
        return pair

    # -- revocation -----------------------------------------------------------------------
    def revoke(self, common_name: str, reason: str) -> list[int]:
        """Revoke every unrevoked certificate issued to `common_name`; returns their serials."""
        certs, number = self._load()
        now = dt.datetime.now(dt.UTC).isoformat()
        done = []
        for i, entry in enumerate(certs):
            if entry.common_name == common_name and entry.revoked_at is None:
                certs[i] = Issued(entry.serial, entry.common_name, entry.kind, entry.not_after, now, reason)
                done.append(entry.serial)
        self._save(certs, crl_number=number)
        return done

    def revoke_serial(self, serial: int, reason: str) -> None:
        """Revoke one certificate by serial (e.g. one issued by mistake)."""
        certs, number = self._load()
        now = dt.datetime.now(dt.UTC).isoformat()
        for i, entry in enumerate(certs):
            if entry.serial == serial and entry.revoked_at is None:
                certs[i] = Issued(entry.serial, entry.common_name, entry.kind, entry.not_after, now, reason)
        self._save(certs, crl_number=number)

    def write_crl(self, *copies: Path, days: int = pki.CRL_DAYS) -> x509.CertificateRevocationList:
        """Sign a fresh CRL (next CRL number) into crl.pem and each of `copies`."""
        certs, number = self._load()
        revoked = [(e.serial, dt.datetime.fromisoformat(e.revoked_at)) for e in certs if e.revoked_at]
        crl = pki.build_crl(self.pair, revoked, number=number + 1, days=days)
        self._save(certs, crl_number=number + 1)
        data = crl.public_bytes(serialization.Encoding.PEM)
        for path in (self.crl_path, *copies):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            atomic.write_bytes(Path(path), data)
        return crl
