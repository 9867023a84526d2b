"""The one permission table (DESIGN.md section 8). Services call ``require`` before
they act; routes never decide who may do what.

Roles, most powerful first: owner, admin, developer, member, viewer. A principal may
also carry scopes (API keys and service accounts): when it does, a permission must be
both granted by a role and named by a scope (``"*"`` names all).
"""

from __future__ import annotations

from enum import StrEnum

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


def granted(principal: Principal) -> frozenset[Permission]:
    """What ``principal`` may do: the union of its roles, narrowed by its scopes."""
    perms: frozenset[Permission] = frozenset().union(*(PERMISSIONS[r] for r in principal.roles))
    if principal.scopes and "*" not in principal.scopes:
        perms = frozenset(p for p in perms if p.value in principal.scopes)
    return perms


def allows(principal: Principal, permission: Permission) -> bool:
    return permission in granted(principal)


def require(principal: Principal, permission: Permission) -> None:
    """Raise ``PermissionDenied`` (403) naming the permission when it is not granted."""
    if not allows(principal, permission):
        raise PermissionDenied(f"this action needs the '{permission.value}' permission")
