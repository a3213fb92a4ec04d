"""``recstream serve``: run the Recording Crypto Server or a decryption proxy; manage its users."""

from __future__ import annotations

import argparse
import json
from typing import Any

from recstream.cli import EXIT_OK, UsageError, eprint
from recstream.cli._serving import _config, _store, serve_config_file
from recstream.cli._util import file_arg, read_password_file
from recstream.service import passwords
from recstream.service.errors import ConflictError, NotFoundError
from recstream.service.store import Role, User, validate_tenant, validate_user_name

MIN_PASSWORD_BYTES = 8


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the Recording Crypto Server (or a decryption proxy); manage its users",
        description="Serve decryption (POST /rcs/decrypt), playback with Range requests "
        "(GET /rcs/recordings/NAME), the player page (GET /) and the decryption-proxy "
        "settings API, as configured by a TOML file (see README, 'serve'). With a [proxy] "
        "section, forward decryption to the RCS the node's location resolves to. Stops "
        "on SIGINT/SIGTERM. Users live in the settings database: add them with 'add-user'.",
    )
    p.add_argument("--config", metavar="RCS.toml", type=file_arg, help="the configuration file")
    p.set_defaults(func=cmd_serve)
    actions = p.add_subparsers(dest="serve_action", metavar="ACTION", parser_class=type(p))

    a = actions.add_parser(
        "add-user",
        help="add a user (or replace one, with --replace)",
        description="Add a user to the settings database. The password is read from the "
        "first line of --password-file and stored as an Argon2id hash. A player decrypts "
        "and plays only the recordings of its tenants; ops manage the proxy settings.",
    )
    _config_arg(a)
    a.add_argument("--name", required=True, help="user name (letters, digits, _ . @ -)")
    a.add_argument("--role", required=True, choices=[r.value for r in Role])
    a.add_argument(
        "--tenant",
        action="append",
        default=[],
        metavar="T",
        help="a tenant whose recordings the user may decrypt; repeat for more",
    )
    a.add_argument("--password-file", required=True, metavar="F")
    a.add_argument("--replace", action="store_true", help="replace an existing user")
    a.set_defaults(func=cmd_add_user)

    r = actions.add_parser("remove-user", help="remove a user")
    _config_arg(r)
    r.add_argument("--name", required=True)
    r.set_defaults(func=cmd_remove_user)

    ls = actions.add_parser("list-users", help="list users, their roles and tenants")
    _config_arg(ls)
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=cmd_list_users)


def _config_arg(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: a --config given before the action is not overwritten by a default.
    p.add_argument("--config", metavar="RCS.toml", type=file_arg, default=argparse.SUPPRESS)


def cmd_serve(args: argparse.Namespace) -> int:
    return serve_config_file(args.config if getattr(args, "config", None) else None)


def cmd_add_user(args: argparse.Namespace) -> int:
    config = _config(args)
    try:
        name = validate_user_name(args.name)
        tenants = frozenset(validate_tenant(t) for t in args.tenant)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    role = Role(args.role)
    if role is Role.PLAYER and not tenants:
        msg = "a player needs at least one --tenant (it sees only its tenants' recordings)"
        raise UsageError(msg)
    password = read_password_file(args.password_file)
    assert password is not None
    if len(password) < MIN_PASSWORD_BYTES:
        msg = f"the password must be at least {MIN_PASSWORD_BYTES} bytes"
        raise UsageError(msg)
    encoded = passwords.hash_password(password)
    store = _store(config)
    try:
        store.put_user(User(name, role, tenants), encoded, replace=args.replace)
    except ConflictError as exc:
        msg = f"{exc}; use --replace to change it"
        raise UsageError(msg) from None
    finally:
        store.close()
    listed = ", ".join(sorted(tenants)) or "no tenants"
    eprint(f"recstream: user {name!r} ({role.value}; {listed}) saved in {config.settings_db}")
    return EXIT_OK


def cmd_remove_user(args: argparse.Namespace) -> int:
    config = _config(args)
    store = _store(config)
    try:
        store.remove_user(args.name)
    except NotFoundError as exc:
        raise UsageError(str(exc)) from None
    finally:
        store.close()
    eprint(f"recstream: user {args.name!r} removed")
    return EXIT_OK


def cmd_list_users(args: argparse.Namespace) -> int:
    config = _config(args)
    store = _store(config)
    try:
        users = store.users()
    finally:
        store.close()
    if args.json:
        rows = [{"name": u.name, "role": u.role.value, "tenants": sorted(u.tenants)} for u in users]
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for u in users:
        print(f"{u.name}\t{u.role.value}\t{','.join(sorted(u.tenants))}")
    return EXIT_OK
