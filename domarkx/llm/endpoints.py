"""Which server a session's model calls go to, and whether the user's key goes with them.

A session document may name ``base_url`` and ``api_key_env``, or an endpoint
of the project's configuration by name (``model: {endpoint: deepseek}``). The
value of a key variable is sent only to an endpoint that the configuration
lists with that variable (tools-chat-trust spec, section 3), and a request at
all goes only to a listed endpoint or to a loopback address (section 3.2: the
conversation holds included files, so the request carries them). Anything
else is a refusal: an ``LLMError`` that the replay cache raises instead of
calling the model, so a recorded reply still replays offline and nothing is
ever sent.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from domarkx.config import ProjectConfig
from domarkx.data.models import ModelSettings
from domarkx.errors import LLMError

# Where the openai client sends requests when no base_url is given.
DEFAULT_BASE_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class Access:
    """A session's model settings as the user's configuration lets them out."""

    settings: ModelSettings  # the endpoint, when named, resolved to its base_url and key
    refusal: LLMError | None = None  # raised in place of any request to the server


def same_url(a: str, b: str) -> bool:
    """Whether two base URLs name the same server and path (case of the host, final /)."""
    x, y = urlsplit(a.strip()), urlsplit(b.strip())
    return (
        x.scheme.lower() == y.scheme.lower()
        and x.netloc.lower() == y.netloc.lower()
        and x.path.rstrip("/") == y.path.rstrip("/")
        and x.query == y.query
    )


def is_loopback(url: str) -> bool:
    """Whether ``url``'s host is this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    try:
        host = urlsplit(url.strip()).hostname
    except ValueError:
        return False
    if host is None:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bad_url(url: str) -> str | None:
    """Why ``url`` cannot be a base URL (None: it can)."""
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        return "holds a space or a control character"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as err:
        return f"is not a URL ({err})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    return None


def resolve(
    settings: ModelSettings,
    project: ProjectConfig,
    *,
    session: str,
    locate: Callable[[str], int | None],
) -> Access:
    """The access ``settings`` get in ``project``; ``locate(key)`` finds a setting's line."""
    config_file = project.describe()
    untrusted = f"; or, if you trust {config_file} as it is, run `domarkx trust`"

    def refuse(key: str, message: str, hint: str) -> Access:
        if project.ignored:
            hint += untrusted
        return Access(settings, LLMError(message, file=session, line=locate(key), hint=hint))

    if settings.base_url is not None and (why := bad_url(settings.base_url)) is not None:
        return refuse(
            "base_url",
            f"model.base_url {settings.base_url!r} {why}",
            'write it as e.g. base_url: "https://api.deepseek.com/v1"',
        )

    if settings.endpoint is not None:
        name = settings.endpoint
        endpoint = project.endpoints.get(name)
        if endpoint is None:
            known = ", ".join(sorted(project.endpoints)) or "none"
            return refuse(
                "endpoint",
                f"model.endpoint {name!r} is not an endpoint of the project's configuration "
                f"(known: {known})",
                f"add to {config_file}:\n    [endpoints.{name}]\n"
                '    base_url = "<the server\'s URL>"\n'
                '    api_key_env = "<the variable that holds its key>"',
            )
        if settings.base_url is not None and not same_url(settings.base_url, endpoint.base_url):
            return refuse(
                "base_url",
                f"model.base_url {settings.base_url} is not the base_url of endpoint {name!r} "
                f"({endpoint.base_url})",
                "remove `base_url` from session-config: the endpoint gives it",
            )
        if settings.api_key_env is not None and settings.api_key_env != endpoint.api_key_env:
            return refuse(
                "api_key_env",
                f"model.api_key_env {settings.api_key_env} is not the key variable of endpoint "
                f"{name!r}",
                "remove `api_key_env` from session-config: the endpoint gives it",
            )
        update = {"base_url": endpoint.base_url, "api_key_env": endpoint.api_key_env}
        return Access(settings.model_copy(update=update))
    variable = settings.api_key_env
    url = settings.base_url or DEFAULT_BASE_URL
    if variable is None:
        # No secret goes with it, but the conversation does: only to a server the user
        # listed, or to this machine.
        if settings.base_url is None and settings.provider != "openai":
            return Access(settings)  # a plugin's own transport: its settings are its own
        if is_loopback(url) or any(same_url(e.base_url, url) for e in project.endpoints.values()):
            return Access(settings)
        return refuse(
            "base_url",
            f"the session asks to send its conversation to {url}, which the project's "
            "configuration does not list as an endpoint; nothing was sent",
            f"if you trust that server with this project's sessions, add to {config_file}:\n"
            f'    [endpoints.NAME]\n    base_url = "{url}"',
        )
    for endpoint in project.endpoints.values():
        if endpoint.api_key_env == variable and same_url(endpoint.base_url, url):
            return Access(settings)
    return refuse(
        "api_key_env",
        f"the session asks to send the key in {variable} to {url}, and the project's "
        "configuration does not grant that key to that server; nothing was sent",
        f"if you trust that server with that key, add to {config_file}:\n"
        f'    [endpoints.NAME]\n    base_url = "{url}"\n    api_key_env = "{variable}"',
    )


def turns_refusal(
    settings: ModelSettings,
    project: ProjectConfig,
    *,
    session: str,
    locate: Callable[[str], int | None],
) -> LLMError | None:
    """``model.max_turns`` past the configuration's ceiling (``[limits] max_turns``): the
    error a run raises before anything starts (None: within it). A raised ceiling is a
    grant: an untrusted file's is ignored (tools-chat-trust spec, section 3.2)."""
    asked, ceiling = settings.max_turns, project.limits.max_turns
    if asked <= ceiling:
        return None
    config_file = project.describe()
    hint = (
        f"lower `model.max_turns` to {ceiling} or less; or, if sessions of this project may "
        f"ask the model that often, add to {config_file}:\n    [limits]\n    max_turns = {asked}"
    )
    if any(grant.startswith("limits max_turns") for grant in project.ignored):
        hint += f"; or, if you trust {config_file} as it is, run `domarkx trust`"
    return LLMError(
        f"model.max_turns = {asked} is past the project's ceiling of {ceiling} model calls "
        "per run ([limits] max_turns); nothing was run",
        file=session,
        line=locate("max_turns"),
        hint=hint,
    )
