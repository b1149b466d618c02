"""Who may change what is served: the model control mode and the admin token guarding the repository API."""

from __future__ import annotations

import hmac
import ipaddress
import os
from dataclasses import dataclass
from typing import Literal

from ortserve.errors import ControlDisabled, PermissionDenied, Unauthenticated

ControlMode = Literal["poll", "explicit", "none"]
CONTROL_MODES: tuple[ControlMode, ...] = ("poll", "explicit", "none")
TOKEN_VARIABLE = "ORTSERVE_ADMIN_TOKEN"


def is_loopback(host: str) -> bool:
    """Whether listening on `host` reaches this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: it may resolve to any address
        return False


def admin_token(flag: str | None) -> str | None:
    """The token from --admin-token, else from the environment; an empty one is none."""
    return (flag if flag is not None else os.environ.get(TOKEN_VARIABLE)) or None


@dataclass(frozen=True)
class ModelControl:
    mode: ControlMode
    token: str | None
    loopback_only: bool  # the server listens on loopback only
    closed: str | None = None  # why the repository API is closed whatever the caller sends (a Ray Serve replica)

    def authorize(self, authorization: str | None, what: str = "the repository API") -> None:
        """Allow an administrative call (`what`: the repository API, changes of the log settings) carrying
        `authorization` (HTTP header or gRPC metadata), or refuse it."""
        if self.closed is not None:
            raise PermissionDenied(self.closed)
        if self.token is None:
            if not self.loopback_only:
                raise PermissionDenied(
                    f"{what} is closed: this server listens beyond loopback and has no admin token; "
                    f"start it with --admin-token TOKEN (or {TOKEN_VARIABLE}) and send 'Authorization: Bearer "
                    "TOKEN'")
            return
        if authorization is None:
            raise Unauthenticated(f"{what} needs 'Authorization: Bearer TOKEN' with the server's admin token")
        scheme, _, presented = authorization.strip().partition(" ")
        matches = hmac.compare_digest(presented.strip().encode(), self.token.encode())
        if scheme.lower() != "bearer" or not matches:
            raise Unauthenticated("the admin token in 'Authorization: Bearer ...' is wrong")

    def allow_load(self) -> None:
        if self.mode == "none":
            raise ControlDisabled("model control is 'none': models are loaded once at start; restart the server "
                                  "with --model-control explicit (or poll) to load models at run time")

    def allow_unload(self) -> None:
        if self.mode == "poll":
            raise ControlDisabled("model control is 'poll': the repository decides what is served; remove the "
                                  "model's directory to unload it, or start the server with --model-control explicit")
        if self.mode == "none":
            raise ControlDisabled("model control is 'none': models are loaded once at start; restart the server "
                                  "with --model-control explicit to unload models at run time")
