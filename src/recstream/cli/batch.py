"""``recstream batch decrypt|rewrap|audit``: archive-scale jobs on Dask."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recstream.cli import EXIT_BATCH_FAILURES, UsageError, eprint
from recstream.cli._util import file_arg, read_input_file

KEY_HELP = (
    "Workers open the keys themselves from these paths (nothing secret is sent in a "
    "task graph): give paths every worker can read. Without --keystore or --key, the "
    "keystore is $RECSTREAM_KEYSTORE (else the default), and its password "
    "$RECSTREAM_KEYSTORE_PASSWORD when there is no --password-file. Recordings still "
    "being recorded (*.incomplete) or held by another process are left alone and "
    "counted as busy; a re-run retries them."
)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "batch",
        help="archive-scale decrypt, re-wrap and audit on Dask",
        description="Run a job over every envelope under SRC (a directory or fsspec URL, in "
        "the archive layout {contact-centre}/{tenant}/{date}/{recording}/ or flat) on a "
        "local Dask cluster, or on --scheduler. Jobs are resumable: a manifest in "
        "SRC/.recstream-batch (or --state-dir) records what is done.",
    )
    jobs = p.add_subparsers(dest="job", metavar="JOB", required=True)
    for name, helptext in (
        ("decrypt", "decrypt every recording under SRC into DST for playback"),
        ("rewrap", "re-wrap every recording's key for new certificates (headers only)"),
        ("audit", "find recordings no key can open (orphans) and keys about to expire"),
    ):
        j = jobs.add_parser(name, help=helptext, description=f"{helptext}. {KEY_HELP}")
        j.add_argument("src", metavar="SRC", type=file_arg)
        if name == "decrypt":
            j.add_argument("dst", metavar="DST", type=file_arg)
        if name == "rewrap":
            j.add_argument(
                "dst",
                metavar="DST",
                type=file_arg,
                nargs="?",
                help="write re-wrapped copies here (default: replace in place)",
            )
            j.add_argument(
                "--to-cert",
                action="append",
                default=[],
                metavar="NEW.pem",
                help="certificate to add as a recipient (repeatable)",
            )
            j.add_argument(
                "--drop",
                action="append",
                default=[],
                metavar="CERT_ID",
                help="certificate ID, or a unique prefix of 8+ hex digits among the keys' "
                "certificates, to remove from the recipients (repeatable)",
            )
        if name == "audit":
            j.add_argument(
                "--unwrap",
                action="store_true",
                help="also prove each key really unwraps its file key (RSA work)",
            )
            j.add_argument("--json", action="store_true", help="print the report as JSON")
            j.add_argument(
                "--ca-file",
                metavar="CA.pem",
                type=file_arg,
                help="also verify every recording's signature against the CA of the "
                "recorders' signing certificates (reads whole files); without it, signed "
                "and unsigned recordings are only counted",
            )
        j.add_argument("--keystore", metavar="KS", type=file_arg, help="keystore file")
        j.add_argument(
            "--key",
            action="append",
            default=[],
            metavar="KEY.pem",
            help="private key file (repeatable), instead of a keystore",
        )
        j.add_argument(
            "--cert",
            action="append",
            default=[],
            metavar="CERT.pem",
            help="certificates of the --key files (their IDs and validity)",
        )
        j.add_argument(
            "--password-file", metavar="F", help="password of the keystore or of the key files"
        )
        j.add_argument(
            "--scheduler",
            metavar="tcp://HOST:PORT",
            help="a running Dask scheduler (default: a local cluster)",
        )
        j.add_argument(
            "--workers", type=int, metavar="N", help="local cluster size (default: one per core)"
        )
        j.add_argument("--state-dir", metavar="DIR", type=file_arg, help="where the manifest lives")
        j.set_defaults(func=cmd_batch)


def _spec(args: argparse.Namespace) -> Any:
    from recstream.keysource import ENV_PATH, KeySource

    if args.keystore and args.key:
        msg = "give either --keystore or --key, not both"
        raise UsageError(msg)
    keystore = None
    if not args.key:
        keystore = KeySource(keystore=args.keystore).keystore_file()
        if not args.keystore and not keystore.is_file():
            msg = (
                f"give --keystore KS or --key KEY.pem to open the recordings (or set "
                f"${ENV_PATH}; {keystore} does not exist)"
            )
            raise UsageError(msg)
    paths = [keystore, args.password_file, *args.key, *args.cert]
    for path in filter(None, paths):
        if not Path(path).is_file():
            msg = f"file not found: {path}"
            raise UsageError(msg)
    return KeySource(  # absolute: workers may run elsewhere
        keystore=str(keystore.resolve()) if keystore else None,
        password_file=str(Path(args.password_file).resolve()) if args.password_file else None,
        key_files=tuple(str(Path(p).resolve()) for p in args.key),
        cert_files=tuple(str(Path(p).resolve()) for p in args.cert),
    )


def _drop_ids(args: argparse.Namespace, opened: Any, pems: tuple[bytes, ...]) -> frozenset[str]:
    """--drop: full IDs, or unique prefixes among the keys' and --to-cert certificates.

    A full ID the keys do not know is taken as given (recordings may name certificates
    whose keys are lost); a prefix must match exactly one known certificate.
    """
    from recstream.ops import AddCertificates, resolve_cert_ids

    known = set(opened.certs) | {r.cert_id_hex for r in AddCertificates(pems).recipients()}
    full = {d.strip().lower().replace(":", "") for d in args.drop}
    known |= {d for d in full if len(d) == 64}
    try:
        return resolve_cert_ids(args.drop, known, what="--drop")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_batch(args: argparse.Namespace) -> int:
    from recstream.batch import jobs
    from recstream.batch.runner import run_job, state_dir
    from recstream.errors import PasswordError
    from recstream.ops import AddCertificates

    if args.workers is not None and args.workers < 1:
        msg = "--workers must be at least 1"
        raise UsageError(msg)
    spec = _spec(args)
    try:
        opened = spec.open()  # fail fast here on a wrong password or bad key, not per task
    except PasswordError as exc:
        msg = f"{exc}: --password-file F, or $RECSTREAM_KEYSTORE_PASSWORD (workers read it too)"
        raise UsageError(msg) from None
    task: Callable[..., Any]
    extra: tuple[Any, ...]
    if args.job == "decrypt":
        task, extra, root = jobs.decrypt_task, (args.dst, spec), args.dst
    elif args.job == "rewrap":
        if not args.to_cert and not args.drop:
            msg = "rewrap needs --to-cert NEW.pem and/or --drop CERT_ID"
            raise UsageError(msg)
        pems = tuple(read_input_file(p, "certificate") for p in args.to_cert)
        drop = _drop_ids(args, opened, pems)
        task = jobs.rewrap_task
        extra = (args.dst, spec, AddCertificates(pems), drop)
        root = args.dst or args.src
    else:
        ca_pem = read_input_file(args.ca_file, "CA file") if args.ca_file else None
        task, extra, root = jobs.audit_task, (spec, args.unwrap, ca_pem, time.time()), args.src
    report = run_job(
        args.job,
        task,
        args.src,
        extra,
        state=state_dir(root, args.state_dir),
        params=[args.src, *(extra[:-1] if args.job == "audit" else extra)],  # not the clock
        scheduler=args.scheduler,
        workers=args.workers,
        progress=_tty_progress(args.job),
        announce=lambda text: eprint(f"recstream: batch {args.job}: {text}"),
    )
    if args.job == "audit":
        return _print_audit(report, args.json)
    counts = report.counts
    where = "in this process" if report.in_process else f"on {report.workers} worker(s)"
    eprint(
        f"recstream: batch {args.job}: {report.total} recordings, {counts.get('done', 0)} "
        f"done, {counts.get('skipped', 0) + report.resumed} already done, "
        f"{counts.get('busy', 0)} busy (left alone), "
        f"{counts.get('failed', 0)} failed in {report.seconds:.1f} s "
        f"({report.rate():.0f}/s {where})"
    )
    for o in report.busy:
        eprint(f"  BUSY {o.path}: {o.detail}")
    for o in report.failures:
        eprint(f"  FAILED {o.path}: {o.detail}")
    return EXIT_BATCH_FAILURES if report.failures else 0


def _print_audit(report: Any, as_json: bool) -> int:
    outcomes = report.outcomes
    per_cert: Counter[str] = Counter()
    per_tenant: Counter[str] = Counter()
    for o in outcomes:
        for cid in o.info.get("cert_ids", []):
            per_cert[cid] += 1
        if o.status != "busy":
            per_tenant[o.info.get("tenant", "?")] += 1
    problems = [o for o in outcomes if o.status != "ok"]
    signatures: Counter[str] = Counter(
        o.info["signature"] for o in outcomes if "signature" in o.info
    )
    doc = report.to_dict() | {
        "orphans": [o.to_dict() for o in outcomes if o.status == "orphan"],
        "expired_only": [o.to_dict() for o in outcomes if o.status == "expired"],
        "expiring": [o.to_dict() for o in outcomes if o.status == "expiring"],
        "per_certificate": dict(per_cert),
        "per_tenant": dict(per_tenant),
        "signatures": dict(signatures),
        "badly_signed": [o.to_dict() for o in outcomes if o.status == "badly_signed"],
    }
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        c = report.counts
        print(
            f"audit of {report.total} recordings ({report.rate():.0f}/s): "
            f"{c.get('ok', 0)} ok, {c.get('orphan', 0)} ORPHANED, "
            f"{c.get('expired', 0)} only under expired certificates, "
            f"{c.get('expiring', 0)} under certificates expiring within 30 days, "
            f"{c.get('failed', 0)} unreadable, {c.get('busy', 0)} busy (being written; "
            "left alone)"
        )
        if signatures:
            shown = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(signatures.items()))
            hint = " (not verified: give --ca-file)" if "signed" in signatures else ""
            print(f"signatures: {shown}{hint}")
        for o in problems:
            print(f"  {o.status.upper():<9} {o.path}: {o.detail}")
        print("recordings per certificate:")
        for cid, n in per_cert.most_common():
            print(f"  {cid}  {n}")
        print("recordings per tenant:")
        for tenant, n in per_tenant.most_common():
            print(f"  {tenant:<20} {n}")
    bad = sum(report.counts.get(k, 0) for k in ("orphan", "failed", "badly_signed"))
    return EXIT_BATCH_FAILURES if bad else 0


def _tty_progress(label: str) -> Callable[[int, int], None] | None:
    """A one-line progress bar on stderr when it is a terminal."""
    if not sys.stderr.isatty():
        return None
    start = time.perf_counter()

    def show(n: int, total: int) -> None:
        width = 30
        filled = int(width * n / total)
        rate = n / max(time.perf_counter() - start, 1e-9)
        sys.stderr.write(
            f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {n}/{total} {rate:.0f}/s"
        )
        if n == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show
