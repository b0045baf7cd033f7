"""Run as an unprivileged user once the privileged work is done: `[global] user`, `group`.

As nginx's `user` and HAProxy's `user`/`group`: the process starts as root (to bind :80 and
:443 and read keys only root may read), and once every listener is bound and every
certificate loaded it becomes `user` for good: supplementary groups first (the user's, from
/etc/group, as `initgroups` does), then the gid, then the uid, so nothing can be taken back.
Only processes that proxy traffic drop: with workers, each worker drops after binding, and
the supervisor stays root (as nginx's master does) so that it can start a worker that binds
:80 again after a crash. What that means for reload: a reload that adds a listener on a port
below 1024 cannot bind it once dropped, and is refused like any reload that cannot bind;
certificates and the config are read again as `user` (make them readable by its group).

Without root there is nothing to drop: `user` is then ignored with a warning (nginx does
the same), unless it names the current user.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
from dataclasses import dataclass

from l4lb.errors import L4lbError

__all__ = ["Identity", "drop_privileges", "lookup_group", "lookup_user", "resolve_identity"]

log = logging.getLogger("l4lb")


@dataclass(frozen=True)
class Identity:
    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def lookup_user(name: str) -> pwd.struct_passwd:
    """The passwd entry of a user name or numeric uid. Raises KeyError with a message."""
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise KeyError(f"no user {name!r} on this host") from None


def lookup_group(name: str) -> grp.struct_group:
    """The group entry of a group name or numeric gid. Raises KeyError with a message."""
    try:
        return grp.getgrgid(int(name)) if name.isdigit() else grp.getgrnam(name)
    except KeyError:
        raise KeyError(f"no group {name!r} on this host") from None


def resolve_identity(user: str, group: str = "") -> Identity:
    """Who to become. Raises L4lbError if the user or group does not exist (any more)."""
    try:
        entry = lookup_user(user)
        gid = lookup_group(group).gr_gid if group else entry.pw_gid
    except KeyError as exc:
        raise L4lbError(f"global.user/group: {exc.args[0]}") from None
    groups = {gid} | {g.gr_gid for g in grp.getgrall() if entry.pw_name in g.gr_mem}
    return Identity(entry.pw_name, entry.pw_uid, gid, tuple(sorted(groups)))


def drop_privileges(user: str, group: str = "") -> None:
    """Become `user` (and `group`) for the rest of the process's life, if running as root.
    Raises L4lbError if the switch fails; warns when not root (nothing to drop)."""
    if not user:
        return
    who = resolve_identity(user, group)
    if os.geteuid() != 0:
        if os.geteuid() != who.uid:
            log.warning("not running as root: global.user %r ignored", user)
        return
    try:
        os.setgroups(list(who.groups))
        os.setgid(who.gid)
        os.setuid(who.uid)
    except OSError as exc:
        raise L4lbError(f"cannot switch to user {user!r}: {exc.strerror or exc}") from None
    log.info("running as user %s (uid %d, gid %d)", who.user, who.uid, who.gid)
