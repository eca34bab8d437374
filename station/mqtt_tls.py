"""TLS for the central link: the SSL context a lane connects with, and a connection error in words.

(Stub: a helper fills this in; the interface is fixed.)
"""

from __future__ import annotations

import logging
import ssl

from station.config import MqttSection

log = logging.getLogger(__name__)


def tls_context(config: MqttSection) -> ssl.SSLContext | None:
    """The context to connect with, or None without TLS."""
    if not config.tls:
        return None
    context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
    if config.cert_file and config.key_file:
        context.load_cert_chain(str(config.cert_file), str(config.key_file))
    if config.tls_insecure:
        log.warning("MQTT TLS: tls_insecure is set: the broker's certificate is not checked against %s",
                    config.host)
        context.check_hostname = False
    return context


def explain(err: BaseException, config: MqttSection) -> str:
    """A failed connection as a sentence for the technician."""
    return str(err)
