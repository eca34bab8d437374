"""TLS for the central link: the SSL context a lane connects with, and a failed connection in words.

`tls_context` is called at every connect, so renewed certificate and key files are read at the next
connect, and `tls_insecure` is logged at WARNING each time. A file that cannot be used is a
`ConfigError` naming the key and the file. The broker's certificate is always checked against the CA
(ca_file, or the system bundle) and for `host` among its subjectAltNames (never its CN);
`tls_insecure` turns off only the check that it names `host`.

`explain` turns what aiomqtt raised into one sentence for a technician. aiomqtt 2.5 raises an
`MqttError` whose message is the OSError's (the `ssl.SSLCertVerificationError`, the refused TCP
connection, ...), which stays as the error's `__context__`; a refused CONNACK is an `MqttConnectError`
whose `rc` is a paho `ReasonCode` (paho 2 maps MQTT 3.1.1's return codes to MQTT 5's reason codes:
4 -> 134, 5 -> 135). Over TLS 1.3 a broker refuses our client certificate only after the handshake:
paho merely logs the alert and aiomqtt reports a timeout, so the socket keeps that alert for `explain`.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiomqtt.exceptions import MqttConnectError

from station.config import ConfigError, MqttSection

log = logging.getLogger(__name__)

_Broker = tuple[str, int, Path | None]  # host, port and the client certificate connecting to it
_alerts: dict[_Broker, ssl.SSLError] = {}  # the TLS alert each broker sent after the handshake, since the connect

_NOT_TRUSTED = {2, 18, 19, 20, 21}  # X509_V_ERR_*: no issuer in the CA file, self-signed (in the chain)
_NOT_NAMED = {62, 64}  # hostname mismatch, IP address mismatch
_CONNACK_OF_311 = {1: 132, 2: 133, 3: 136, 4: 134, 5: 135}  # MQTT 3.1.1 return code -> MQTT 5 reason code


def tls_context(config: MqttSection) -> ssl.SSLContext | None:
    """The context to connect with, or None without TLS. Raises ConfigError for a file it cannot use."""
    broker = (config.host, config.port, config.cert_file)
    _alerts.pop(broker, None)  # a new connect: an alert from an earlier one does not explain it
    if not config.tls:
        return None
    _readable("ca_file", config.ca_file)
    with _usable(f"ca_file {config.ca_file}", "a PEM CA certificate"):
        context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
    context.hostname_checks_common_name = False  # the name must be a subjectAltName, as RFC 6125 has it
    if config.cert_file and config.key_file:
        _readable("cert_file", config.cert_file)
        _readable("key_file", config.key_file)
        with _usable(f"cert_file {config.cert_file} / key_file {config.key_file}", "a PEM certificate and key"):
            context.load_cert_chain(config.cert_file, config.key_file, password=_encrypted_key)
    if config.tls_insecure:
        log.warning("MQTT TLS: tls_insecure = true: the broker's certificate is not checked for the name %s "
                    "(its CA still is); anyone holding a certificate from that CA can pose as the broker",
                    config.host)
        context.check_hostname = False
    context.sslsocket_class = _keeping_alerts(broker)
    return context


class _EncryptedKey(Exception):
    pass


def _encrypted_key() -> str:
    raise _EncryptedKey  # OpenSSL would otherwise ask for the pass phrase on the terminal, and wait


@contextmanager
def _usable(files: str, wanted: str) -> Iterator[None]:
    """OpenSSL's refusal of a file as a ConfigError naming the keys and the files."""
    try:
        yield
    except _EncryptedKey as err:
        raise ConfigError(f"[mqtt] {files}: the key is encrypted; the station needs it without a pass phrase "
                          f"(readable by the station's user only)") from err
    except ssl.SSLError as err:
        what = ("the key does not belong to the certificate" if err.reason == "KEY_VALUES_MISMATCH"
                else f"not {wanted} (OpenSSL: {err.reason or err.strerror})")
        raise ConfigError(f"[mqtt] {files}: {what}") from err


def _readable(key: str, path: Path | None) -> None:
    if path is None:
        return
    try:
        path.open("rb").close()
    except OSError as err:
        raise ConfigError(f"[mqtt] {key} {path}: cannot read it: {err.strerror}") from err


def _keeping_alerts(broker: _Broker) -> type[ssl.SSLSocket]:
    """A socket class that keeps, for `explain`, the alert with which `broker` ends the connection after the
    handshake (TLS 1.3's refusal of our certificate): paho only logs it, and aiomqtt then times out."""
    class AlertKeepingSocket(ssl.SSLSocket):
        def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
            try:
                return super().recv(buflen, flags)
            except ssl.SSLError as err:
                if "ALERT" in (err.reason or ""):
                    _alerts[broker] = err
                raise

    return AlertKeepingSocket


def explain(err: BaseException, config: MqttSection) -> str:
    """A failed connection as a sentence for the technician: what went wrong, and where."""
    where = f"{config.host}:{config.port}"
    causes = _causes(err)
    connecting = _while_connecting(err)
    for cause in causes:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return _not_verified(cause, config, where)
    alert = next((c for c in causes if isinstance(c, ssl.SSLError) and "ALERT" in (c.reason or "")), None)
    if alert is None and connecting and config.tls:
        alert = _alerts.get((config.host, config.port, config.cert_file))
    if alert is not None:
        return _refused_by_broker(alert, config, where)
    for cause in causes:
        if isinstance(cause, MqttConnectError):
            return _refused_connack(cause.rc, config, where)
        if isinstance(cause, ConnectionRefusedError):
            return f"nothing is listening at {where} (connection refused): is the broker running, on that port?"
        if isinstance(cause, socket.gaierror):
            return f"the broker's host name {config.host!r} cannot be resolved ({cause.strerror})"
        if config.tls and connecting and (isinstance(cause, ConnectionResetError | ssl.SSLEOFError) or (
                isinstance(cause, ssl.SSLError) and cause.reason == "WRONG_VERSION_NUMBER")):
            return (f"TLS: the broker at {where} broke off the TLS handshake: is that port a plain MQTT listener? "
                    f"(TLS listeners are usually on 8883)")
        if connecting and isinstance(cause, TimeoutError):  # no CONNACK in time (or no TCP connect)
            hint = "" if config.tls else ": if that port is a TLS listener, set tls = true"
            return f"the broker at {where} did not answer the MQTT connect in time{hint}"
        if connecting and isinstance(cause, OSError) and cause.strerror:
            return f"cannot reach the broker at {where}: {cause.strerror}"
    return f"{where}: {err}"


def _not_verified(err: ssl.SSLCertVerificationError, config: MqttSection, where: str) -> str:
    code = err.verify_code
    if code in _NOT_TRUSTED:
        trusted = f"the CA in ca_file {config.ca_file}" if config.ca_file else "a CA of the system CA bundle"
        return (f"TLS: the broker's certificate at {where} is not signed by {trusted}, so it is not trusted "
                f"(OpenSSL: {err.verify_message})")
    if code in _NOT_NAMED:
        kind = "IP" if _is_address(config.host) else "DNS"
        return (f"TLS: the broker's certificate at {where} does not name {config.host}: the certificate must "
                f"carry it as a subjectAltName ({kind}:{config.host})")
    if code == 10:
        return (f"TLS: the broker's certificate at {where} has expired: the broker needs a renewed certificate "
                f"(or this station's clock is wrong)")
    if code == 9:
        return f"TLS: the broker's certificate at {where} is not valid yet: is this station's clock right?"
    return f"TLS: the broker's certificate at {where} was refused: {err.verify_message}"


def _refused_by_broker(alert: ssl.SSLError, config: MqttSection, where: str) -> str:
    reason = alert.reason or ""
    said = reason.lower().replace("_", " ")
    if config.cert_file is None and ("CERTIFICATE_REQUIRED" in reason or "HANDSHAKE_FAILURE" in reason):
        return (f"TLS: the broker at {where} requires a client certificate and none is configured "
                f"(cert_file, key_file) ({said})")
    if not any(word in reason for word in ("CERTIFICATE", "UNKNOWN_CA", "ACCESS_DENIED")):
        return f"TLS: the broker at {where} ended the TLS handshake ({said})"
    why = ("it is not signed by a CA the broker trusts" if "UNKNOWN_CA" in reason
           else "it has expired" if "EXPIRED" in reason else "it has been revoked" if "REVOKED" in reason
           else "the broker does not accept it")
    return f"TLS: the broker at {where} refused this lane's client certificate {config.cert_file}: {why} ({said})"


def _refused_connack(rc: object, config: MqttSection, where: str) -> str:
    code = getattr(rc, "value", rc)
    code = _CONNACK_OF_311.get(code, code) if isinstance(code, int) and code < 128 else code
    who = (f"username {config.username!r}" if config.username
           else "the client certificate's name" if config.cert_file else "no username given")
    if code == 134:
        return f"the broker at {where} refused the login: bad user name or password ({who})"
    if code == 135:
        return (f"the broker at {where} refused the connection: not authorised ({who}): a wrong username or "
                f"password, or an account the broker does not let connect")
    if code == 132:
        return f"the broker at {where} does not speak MQTT {config.protocol}: try protocol = \"3.1.1\""
    return f"the broker at {where} refused the connection: {rc} (CONNACK reason code {code})"


def _causes(err: BaseException) -> list[BaseException]:
    """`err` and what it came from, outermost first (aiomqtt raises `from None`: the cause is the context)."""
    chain: list[BaseException] = []
    cause: BaseException | None = err
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    return chain


def _while_connecting(err: BaseException) -> bool:
    """Raised while aiomqtt's client connected (its `__aenter__`), not later in the session."""
    return any(frame.f_code.co_name == "__aenter__" and frame.f_globals.get("__name__", "").startswith("aiomqtt")
               for frame, _ in traceback.walk_tb(err.__traceback__))


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
