"""X.509 for mutual TLS: an offline CA, the broker's server certificate, client certificates.

Node and HQ clients are identified to the broker by their certificate's common name (the
broker uses it as the user name for its ACL), so a CN is a node id or an HQ worker name.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provisioning.errors import PKIError
from transport import atomic
from transport.keys import write_private_key

CRL_DAYS = 365
CLIENT_DAYS = 825
SERVER_DAYS = 825
CA_DAYS = 3650


@dataclass(frozen=True)
class CertPair:
    """Where a certificate and its private key were written."""

    cert: Path
    key: Path


def _name(common_name: str, org: str = "ALPR") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    """A P-256 key: fast TLS handshakes on a Pi and supported by every broker."""
    return ec.generate_private_key(ec.SECP256R1())


def write_cert(path: Path, cert: x509.Certificate) -> None:
    """Write a certificate as PEM, mode 0644, atomically."""
    atomic.write_bytes(Path(path), cert.public_bytes(serialization.Encoding.PEM), 0o644)


def load_cert(path: Path) -> x509.Certificate:
    """Load a PEM certificate; PKIError names the file if it is missing or invalid."""
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except OSError as exc:
        raise PKIError(f"{path}: cannot read certificate: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise PKIError(f"{path}: not a PEM certificate ({exc})") from exc


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise PKIError(f"{path}: cannot read private key: {exc.strerror or exc}") from exc
    except (ValueError, TypeError) as exc:
        raise PKIError(f"{path}: not a PEM private key ({exc})") from exc
    return key


def create_ca(directory: Path, name: str = "ALPR offline CA", days: int = CA_DAYS) -> CertPair:
    """Create a self-signed CA (ca.pem, ca.key) in `directory`."""
    directory = Path(directory)
    key = new_key()
    subject = _name(name)
    now = _now()
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    pair = CertPair(directory / "ca.pem", directory / "ca.key")
    write_private_key(pair.key, key)
    write_cert(pair.cert, cert)
    return pair


def make_csr(common_name: str, key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    """A CSR for a client certificate with `common_name`."""
    return x509.CertificateSigningRequestBuilder().subject_name(_name(common_name)).sign(key, hashes.SHA256())


def sign_csr(ca: CertPair, csr: x509.CertificateSigningRequest, *, server_names: list[str] | None = None,
             days: int = CLIENT_DAYS, not_before: dt.datetime | None = None,
             uris: list[str] | None = None) -> x509.Certificate:
    """Issue a certificate for a CSR: a TLS client certificate, or a server one if `server_names`.

    `uris` (client certificates): subjectAltName URIs the CA attests beside the CN, such as the
    node's signing key (transport.provenance.sign_key_uri). The broker names the client by its
    CN only, so they change nothing there."""
    if not csr.is_signature_valid:
        raise PKIError("CSR signature is invalid")
    ca_cert = load_cert(ca.cert)
    ca_key = load_key(ca.key)
    start = not_before or (_now() - dt.timedelta(minutes=5))
    builder = (
        x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca_cert.subject)
        .public_key(csr.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if server_names:
        sans: list[x509.GeneralName] = []
        for name in server_names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        if uris:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def issue(ca: CertPair, common_name: str, directory: Path, *, server_names: list[str] | None = None,
          days: int = CLIENT_DAYS, stem: str | None = None, not_before: dt.datetime | None = None) -> CertPair:
    """Make a key and a CA-signed certificate for `common_name` in `directory` (key 0600)."""
    key = new_key()
    cert = sign_csr(ca, make_csr(common_name, key), server_names=server_names, days=days, not_before=not_before)
    stem = stem or common_name
    pair = CertPair(Path(directory) / f"{stem}.pem", Path(directory) / f"{stem}.key")
    write_private_key(pair.key, key)
    write_cert(pair.cert, cert)
    return pair


def load_csr(data: bytes, source: str) -> x509.CertificateSigningRequest:
    """Parse a PEM CSR; PKIError names `source` (a file or field) if it is not one."""
    try:
        return x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise PKIError(f"{source}: not a PEM certificate request ({exc})") from exc


def common_name(name: x509.Name) -> str:
    """The (single) common name of a subject, or '' if it has none."""
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if len(values) == 1 else ""


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER bytes, hex."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def same_public_key(a, b) -> bool:
    """Whether two public keys are the same key (compared as SubjectPublicKeyInfo DER)."""
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return a.public_bytes(*fmt) == b.public_bytes(*fmt)


def issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """Whether `ca_cert` signed `cert` (signature and issuer name)."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def check_validity(cert: x509.Certificate, source: str, now: dt.datetime | None = None) -> None:
    """PKIError naming `source` if the certificate is not valid at `now`."""
    now = now or _now()
    if now < cert.not_valid_before_utc:
        raise PKIError(f"{source}: certificate is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z")
    if now >= cert.not_valid_after_utc:
        raise PKIError(f"{source}: certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z")


def build_crl(ca: CertPair, revoked: list[tuple[int, dt.datetime]], *, number: int,
              days: int = CRL_DAYS) -> x509.CertificateRevocationList:
    """A CRL signed by the CA listing `revoked` (serial, revocation time).

    A broker with a CRL file refuses every client if the CRL has expired, so `days` is long
    and every revocation or `ca crl` writes a fresh one.
    """
    ca_cert = load_cert(ca.cert)
    ca_key = load_key(ca.key)
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(minutes=5)).next_update(now + dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build())
    return builder.sign(ca_key, hashes.SHA256())
