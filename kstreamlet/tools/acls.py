"""``kstreamlet acls module:app``: the ACLs an application's principal needs (docs/security.md).

Prints one ``kafka-acls.sh --add`` line per ACL (``--json``: the list), or with ``--apply``
creates them through the admin API. ``--apply`` and ``--check`` connect with the resolved settings
(flags, ``KSTREAMLET_*``, the app's code): run them with an admin's login (a super user, or ALTER
on the cluster) and name the app's principal with ``--principal``; ``--check`` compares them with
the ACLs the cluster has for the principal and exits 1 when some are missing.

The principal is ``User:<sasl_username>`` of the app's settings unless ``--principal`` names it.

Python API: :func:`kstreamlet.runtime.acls.required_acls`, :func:`apply`, :func:`check`.
"""

from __future__ import annotations

import argparse
from typing import Any

from kstreamlet.runtime.acls import Acl, principal_of, required_acls
from kstreamlet.tools.common import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    ToolError,
    add_connection_args,
    add_json_arg,
    admin_client,
    command,
    dumps,
    load_tool_app,
    subparser,
)


def apply(admin: Any, acls: list[Acl], principal: str, timeout: float = 30.0) -> int:
    """Create ``acls`` for ``principal`` (existing ones are kept); returns how many were sent."""
    from concurrent.futures import wait

    bindings = [a.binding(principal) for a in acls]
    if not bindings:
        return 0
    futures = admin.create_acls(bindings, request_timeout=timeout)
    wait(list(futures.values()), timeout=timeout)
    errors = []
    for binding, fut in futures.items():
        try:
            fut.result(0)
        except Exception as e:
            errors.append(f"{binding}: {e}")
    if errors:
        raise ToolError("creating ACLs failed (is this a super user / has it ALTER on the cluster?): "
                        + "; ".join(errors))
    return len(bindings)


def check(admin: Any, acls: list[Acl], principal: str, timeout: float = 30.0) -> list[Acl]:
    """The ACLs of ``acls`` the cluster does not have (or imply) for ``principal``."""
    from confluent_kafka.admin import (AclBindingFilter, AclOperation, AclPermissionType, ResourcePatternType,
                                       ResourceType)

    # None = any name / any host (the stubs say str).
    flt = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, principal, None,  # type: ignore[arg-type]
                           AclOperation.ANY,
                           AclPermissionType.ALLOW)
    found = admin.describe_acls(flt, request_timeout=timeout).result(timeout)
    have = []
    for b in found:
        restype = "CLUSTER" if b.restype.name == "BROKER" else b.restype.name
        have.append(Acl(restype, b.name, b.resource_pattern_type.name, b.operation.name))
    missing = []
    for want in acls:
        # A wanted PREFIXED ACL is covered by an equal-or-shorter prefix; a literal one by any match.
        ok = any(h.covers(want.resource_type, want.name, want.operation)
                 and (want.pattern == "LITERAL" or h.pattern == "PREFIXED") for h in have)
        if not ok:
            missing.append(want)
    return missing


@command
def _cmd_acls(args: argparse.Namespace) -> int:
    app = load_tool_app(args.app, args.bootstrap_servers)
    settings = app.settings
    principal = args.principal or principal_of(settings)
    if (args.apply or args.check_acls) and not (args.principal or settings.principal):
        raise ToolError("name the principal: --principal User:<name> (or set sasl_username, env KSTREAMLET_SASL_USERNAME)")
    if not principal.startswith(("User:", "Group:")) and ":" not in principal:
        raise ToolError(f"--principal must look like User:<name>, got {principal!r}")
    acls = required_acls(app.topology(), settings)
    if args.apply or args.check_acls:
        # Connects with the resolved settings: run it with an admin's login (a super user, or ALTER on
        # the cluster for --apply / DESCRIBE for --check) and name the app's principal with --principal.
        admin = admin_client(settings)
        if args.apply:
            n = apply(admin, acls, principal)
            if args.json:
                print(dumps({"principal": principal, "applied": [_as_dict(a) for a in acls]}))
            else:
                print(f"applied {n} ACLs for {principal}")
            return EXIT_OK
        missing = check(admin, acls, principal)
        if args.json:
            print(dumps({"principal": principal, "missing": [_as_dict(a) for a in missing]}))
        else:
            for a in missing:
                print(f"missing\t{a.describe()}\t{a.kafka_acls_line(principal, settings.bootstrap_servers)}")
            if not missing:
                print(f"ok\t{principal} has every ACL {args.app} needs")
        return EXIT_NOT_FOUND if missing else EXIT_OK
    if args.json:
        print(dumps({"principal": principal, "acls": [_as_dict(a) for a in acls]}))
    else:
        for a in acls:
            print(a.kafka_acls_line(principal, args.bootstrap_servers or settings.bootstrap_servers))
    return EXIT_OK


def _as_dict(a: Acl) -> dict[str, str]:
    return {"resource_type": a.resource_type, "name": a.name, "pattern": a.pattern, "operation": a.operation,
            "why": a.why}


def add_parser(subparsers: Any) -> None:
    """Register ``kstreamlet acls ...``."""
    p = subparser(subparsers, "acls", "the ACLs an app's principal needs: print, --apply or --check them", """
  kstreamlet acls services.wordcount:app --principal User:wordcount
  KSTREAMLET_SASL_USERNAME=wordcount kstreamlet acls services.wordcount:app --json
  KSTREAMLET_SASL_USERNAME=admin KSTREAMLET_SASL_PASSWORD=... \\
      kstreamlet acls services.wordcount:app --principal User:wordcount --apply   # as a super user
  kstreamlet acls services.wordcount:app --check   # exit 1 when an ACL is missing
""", description="The ACLs an application needs (docs/security.md): READ on inputs, WRITE on outputs, ALL on "
                 "'<app>-*' internal topics, READ on its group, WRITE/DESCRIBE on its transactional ids, "
                 "IDEMPOTENT_WRITE. Prints kafka-acls.sh lines; --apply creates them, --check compares.")
    p.add_argument("app", metavar="module:app")
    p.add_argument("--principal", help="principal to grant (default: User:<sasl_username> of the app's settings)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--apply", action="store_true", help="create the ACLs through the admin API")
    mode.add_argument("--check", dest="check_acls", action="store_true", help="list the ACLs the cluster lacks (exit 1 if any)")
    add_connection_args(p)
    add_json_arg(p)
    p.set_defaults(fn=_cmd_acls)


__all__ = ["add_parser", "apply", "check"]
