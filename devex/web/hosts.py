"""Which host names the service answers to: a defence against DNS rebinding.

A web page can rebind its own name to 127.0.0.1 and then talk to a service on the
visitor's machine as a same-origin page, with the ``Host`` header still naming the
attacker's site. So requests whose ``Host`` is not one of ours are refused with 400 before
any view (or login) runs. The list is Flask's ``TRUSTED_HOSTS`` (the request's
``trusted_hosts``), filled from ``DEVEX_ALLOWED_HOSTS``; without it, embedded mode and local
login default to ``127.0.0.1`` and ``localhost``; the host of ``DEVEX_CORE_URL`` (how runners
reach the core) is always added. The address the connection arrived on
(the bound address: ``flask run --host 192.168.1.5``, a Kubernetes probe to the pod's IP)
is always accepted as a host: a rebinding page can only ever send its own *name*.
"""

from __future__ import annotations

import ipaddress
import logging
from urllib.parse import urlsplit

from apiflask import APIFlask
from flask import Request, request
from werkzeug.exceptions import SecurityError
from werkzeug.wsgi import get_host

from devex.config import Settings
from devex.errors import DevexError
from devex.web.bounded import BoundedMap

log = logging.getLogger(__name__)
DEFAULT_HOSTS = ("127.0.0.1", "localhost")
ANY_HOST = "*"


class UntrustedHost(DevexError):
    status = 400
    code = "invalid_host"


def allowed_hosts(settings: Settings) -> list[str] | None:
    """The host names to accept, or None for any (``*``, or a cluster left unconfigured).
    The host of ``DEVEX_CORE_URL`` is always among them: runners call the core by it."""
    if ANY_HOST in settings.allowed_hosts:
        return None
    if settings.allowed_hosts:
        names = list(settings.allowed_hosts)
    elif settings.embedded or settings.auth_mode == "local":
        names = list(DEFAULT_HOSTS)
    else:
        return None
    core = urlsplit(settings.core_url).hostname if settings.core_url else None
    return names + [core] if core and core not in names else names


def connection_address(environ: dict) -> str | None:
    """The local IPv4 address this request's connection arrived on, when the server says
    (werkzeug's and gunicorn's servers put the socket in the environ)."""
    sock = environ.get("werkzeug.socket") or environ.get("gunicorn.socket")
    try:
        ip = ipaddress.ip_address(sock.getsockname()[0])
    except (AttributeError, OSError, TypeError, ValueError, IndexError):
        return None  # no socket, a Unix socket, or a server that does not say
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # werkzeug's host matching cannot take IPv6 literals; those need DEVEX_ALLOWED_HOSTS.
    return str(ip) if ip.version == 4 and not ip.is_unspecified else None


class HostCheckedRequest(Request):
    """Flask sets ``trusted_hosts`` from ``TRUSTED_HOSTS`` for each request and checks the
    host against it before routing; this adds the connection's own address.

    werkzeug checks the host each time it is asked for it (several times a request, with
    an IDNA encoding of every trusted name each time). A host found trusted once is
    remembered per process, and its requests then answer ``None`` ("any host"), so the
    later checks, which could only pass, are skipped; an untrusted host always gets the
    list, and with it werkzeug's refusal."""

    @property
    def trusted_hosts(self) -> list[str] | None:
        if "_trusted" in self.__dict__:
            return self.__dict__["_trusted"]
        names = self.__dict__.get("_trusted_names")
        if names is None:
            return None
        own = connection_address(self.environ)
        trusted = [*names, own] if own else list(names)
        asked = (tuple(trusted), self.environ.get("HTTP_HOST"), self.environ.get("SERVER_NAME"),
                 self.environ.get("SERVER_PORT"), self.environ.get("wsgi.url_scheme"))
        verdict = _VERDICTS.get(asked)
        if verdict is None:
            try:
                get_host(self.environ, trusted)
                verdict = True
            except SecurityError:
                verdict = False
            _VERDICTS.remember(asked, verdict)
        self.__dict__["_trusted"] = None if verdict else trusted
        return self.__dict__["_trusted"]

    @trusted_hosts.setter
    def trusted_hosts(self, value: list[str] | None) -> None:
        self.__dict__["_trusted_names"] = value
        self.__dict__.pop("_trusted", None)


# (trusted names, Host, server, port, scheme) -> trusted?
_VERDICTS: BoundedMap[tuple, bool] = BoundedMap(1024)


def _refuse_untrusted_host() -> None:
    # Flask's host check fails before routing: no view would run, but app-wide hooks
    # (preflights, rate limits) still would. This hook is registered first.
    if isinstance(request.routing_exception, SecurityError):
        raise UntrustedHost(
            "This server does not answer to that host name (see DEVEX_ALLOWED_HOSTS)."
        )


def init_hosts(app: APIFlask, settings: Settings) -> None:
    """Call first in the factory, before any other ``before_request`` hook is added."""
    app.request_class = HostCheckedRequest
    app.config["TRUSTED_HOSTS"] = allowed_hosts(settings)
    if app.config["TRUSTED_HOSTS"] is None and ANY_HOST not in settings.allowed_hosts:
        log.warning("DEVEX_ALLOWED_HOSTS is not set: requests for any host name are served; "
                    "set it to this service's public host name")
    app.before_request(_refuse_untrusted_host)
