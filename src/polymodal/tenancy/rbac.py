"""The one permission table (DESIGN.md section 8). Services call ``require`` before
they act; routes never decide who may do what.

Roles, most powerful first: owner, admin, developer, member, viewer. A principal may
also carry scopes (API keys and service accounts): when it does, a permission must be
both granted by a role and named by a scope (``"*"`` names all). Scope names are the
permission values (``models:use``); the foundation's short names (``chat``) still work
through ``LEGACY_SCOPES``.

``granted`` is memoised on (roles, scopes), so the check on the gateway's hot path is a
dictionary hit and a frozenset lookup.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache

from polymodal.domain.errors import PermissionDenied
from polymodal.domain.principal import Principal, Role


class Permission(StrEnum):
    # model calls and content
    MODELS_USE = "models:use"  # chat, embeddings, template generation
    TEMPLATES_READ = "templates:read"
    TEMPLATES_WRITE = "templates:write"  # tenant custom templates, hide/override
    # knowledge bases and chatbots
    KB_READ = "kb:read"
    KB_WRITE = "kb:write"  # create/delete KBs, upload/delete documents
    CHATBOTS_READ = "chatbots:read"
    CHATBOTS_WRITE = "chatbots:write"
    CHATBOTS_CHAT = "chatbots:chat"
    # media and pipelines
    MEDIA_USE = "media:use"
    PIPELINES_USE = "pipelines:use"
    # people and credentials
    MEMBERS_READ = "members:read"
    MEMBERS_WRITE = "members:write"  # invite, remove, change roles (not to owner)
    OWNERS_WRITE = "owners:write"  # grant or revoke the owner role
    KEYS_READ = "keys:read"
    KEYS_WRITE = "keys:write"
    # money and governance
    USAGE_READ = "usage:read"  # ledger reports and exports
    BUDGETS_READ = "budgets:read"
    BUDGETS_WRITE = "budgets:write"
    LIMITS_WRITE = "limits:write"
    SETTINGS_WRITE = "settings:write"  # routing policy and tenant settings
    AUDIT_READ = "audit:read"
    DATA_EXPORT = "data:export"  # GDPR export
    DATA_ERASE = "data:erase"  # GDPR erasure


_P = Permission
_VIEWER = frozenset({_P.TEMPLATES_READ, _P.KB_READ, _P.CHATBOTS_READ, _P.BUDGETS_READ})
_MEMBER = _VIEWER | {_P.MODELS_USE, _P.CHATBOTS_CHAT, _P.MEDIA_USE, _P.PIPELINES_USE}
_DEVELOPER = _MEMBER | {
    _P.TEMPLATES_WRITE,
    _P.KB_WRITE,
    _P.CHATBOTS_WRITE,
    _P.KEYS_READ,
    _P.KEYS_WRITE,
    _P.USAGE_READ,
}
_ADMIN = _DEVELOPER | {
    _P.MEMBERS_READ,
    _P.MEMBERS_WRITE,
    _P.BUDGETS_WRITE,
    _P.LIMITS_WRITE,
    _P.SETTINGS_WRITE,
    _P.AUDIT_READ,
    _P.DATA_EXPORT,
}
_OWNER = _ADMIN | {_P.OWNERS_WRITE, _P.DATA_ERASE}

PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.OWNER: frozenset(_OWNER),
    Role.ADMIN: frozenset(_ADMIN),
    Role.DEVELOPER: frozenset(_DEVELOPER),
    Role.MEMBER: frozenset(_MEMBER),
    Role.VIEWER: frozenset(_VIEWER),
}


# Scope names API keys carried before the permission table existed.
LEGACY_SCOPES: dict[str, frozenset[Permission]] = {
    "chat": frozenset({_P.MODELS_USE}),
    "embeddings": frozenset({_P.MODELS_USE}),
    "models": frozenset({_P.MODELS_USE}),
    "templates": frozenset({_P.TEMPLATES_READ, _P.TEMPLATES_WRITE}),
}
ALL_SCOPE = "*"
_BY_VALUE = {p.value: p for p in Permission}
# Most powerful first: a lower number outranks a higher one.
ROLE_RANK: dict[Role, int] = {role: i for i, role in enumerate(Role)}


def scope_permissions(scopes: frozenset[str] | set[str] | list[str]) -> frozenset[Permission]:
    """The permissions a set of scope names names (unknown names name nothing)."""
    if ALL_SCOPE in scopes:
        return frozenset(Permission)
    perms: set[Permission] = set()
    for scope in scopes:
        if scope in LEGACY_SCOPES:
            perms |= LEGACY_SCOPES[scope]
        elif scope in _BY_VALUE:
            perms.add(_BY_VALUE[scope])
    return frozenset(perms)


def unknown_scopes(scopes: list[str] | set[str] | frozenset[str]) -> list[str]:
    known = _BY_VALUE.keys() | LEGACY_SCOPES.keys() | {ALL_SCOPE}
    return sorted(s for s in scopes if s not in known)


@lru_cache(maxsize=4096)
def _granted(roles: frozenset[Role], scopes: frozenset[str]) -> frozenset[Permission]:
    perms: frozenset[Permission] = frozenset().union(*(PERMISSIONS[r] for r in roles))
    if scopes:
        perms &= scope_permissions(scopes)
    return perms


def granted(principal: Principal) -> frozenset[Permission]:
    """What ``principal`` may do: the union of its roles, narrowed by its scopes."""
    return _granted(principal.roles, principal.scopes)


def top_role(principal: Principal) -> Role | None:
    """The principal's most powerful role (None when it has none)."""
    return min(principal.roles, key=ROLE_RANK.__getitem__, default=None)


def require_grant(principal: Principal, role: Role, *, to_manage: Permission) -> None:
    """May ``principal`` give (or take away) ``role``? It needs ``to_manage``, the owner
    role needs ``owners:write``, and nobody hands out a role above their own."""
    require(principal, to_manage)
    if role is Role.OWNER:
        require(principal, Permission.OWNERS_WRITE)
    mine = top_role(principal)
    if mine is None or ROLE_RANK[role] < ROLE_RANK[mine]:
        raise PermissionDenied(
            f"role {role.value!r} is above your own role; ask an owner", code="role_above_own"
        )


def allows(principal: Principal, permission: Permission) -> bool:
    return permission in granted(principal)


def require(principal: Principal, permission: Permission) -> None:
    """Raise ``PermissionDenied`` (403) naming the permission when it is not granted."""
    if not allows(principal, permission):
        raise PermissionDenied(f"this action needs the '{permission.value}' permission")
