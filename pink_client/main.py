"""The ``pink`` entry point: argument parsing, logging setup and the mapping of failures to
one stderr line and an exit code."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
from typing import Any, Callable

from pink import __version__
from pink.model import parse_day, valid_output
from pink.states import JobState

from .commands import (
    cmd_cancel, cmd_datasets, cmd_download, cmd_login, cmd_logout, cmd_logs, cmd_ls, cmd_status,
    cmd_submit, cmd_workers,
)
from .errors import EXIT_OK, EXIT_USAGE, CliError
from .reactions import cmd_notify
from .lifecycle import cmd_reorder, cmd_resubmit, cmd_rm
from .usage import cmd_usage

STATE_NAMES = tuple(s.value for s in JobState)


def parse_duration(text: str) -> int:
    """``3600``, ``90s``, ``30m``, ``2h`` or ``1d`` → seconds (argparse type)."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text.lower())
    if not m or int(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration; use seconds or e.g. 90s, 30m, 2h, 1d"
        )
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def output_mode(text: str) -> str:
    try:
        return valid_output(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def day(text: str) -> str:
    try:
        return parse_day(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number > 0")
    return value


def _add_globals(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Global options, accepted before and after the subcommand.

    On the subparsers the defaults are SUPPRESS, so an option given before the subcommand is
    not overwritten by the subparser's default.
    """

    def d(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    g = parser.add_argument_group("connection and output")
    g.add_argument(
        "--url",
        default=d(None),
        help="server URL (default: $PINK_URL or the one from `pink login`)",
    )
    g.add_argument(
        "--ca-cert",
        default=d(None),
        metavar="FILE",
        help="CA certificate to verify the server with ($PINK_CA_CERT)",
    )
    g.add_argument(
        "--token",
        default=d(None),
        help="API token ($PINK_TOKEN; default: the one from `pink login`)",
    )
    g.add_argument(
        "-v", "--verbose", action="count", default=d(0), help="log more (-vv: HTTP details)"
    )
    g.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=d(False),
        help="no progress or status messages on stderr",
    )


def _add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--format",
        dest="fmt",
        choices=("table", "json"),
        default="table",
        help="output format",
    )


def _add_job_options(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """What a job asks for and runs with: the options ``pink submit`` and ``pink resubmit``
    share (a resubmit changes only those given). Returns the "runs with" group."""
    p.add_argument("--gpus", type=non_negative_int, help="GPUs to reserve (0 = CPU only)")
    p.add_argument(
        "--timeout",
        type=parse_duration,
        metavar="SECONDS",
        help="run time limit: seconds, or 30m, 2h, 1d",
    )
    p.add_argument(
        "--output",
        dest="job_output",
        type=output_mode,
        metavar="MODE",
        help="what the output archive holds: full (the container's filesystem, the default), "
        "changes (only what the job wrote, plus a list of what it deleted), path:/DIR (only "
        "DIR, made empty and writable for the job, e.g. path:/out) or none",
    )
    p.add_argument("--name", help="a name for the job (default: the image's tag)")
    p.add_argument(
        "--priority",
        type=int,
        help="order in its worker's queue (default 0): below 0, down to -100, runs after the "
        "other jobs there; above 0 (up to 100) is for admins only",
    )
    p.add_argument(
        "--user-priority",
        type=int,
        metavar="N",
        help="order among your own jobs only (default 0, -100..100; higher first); "
        "change it while queued with `pink reorder`",
    )
    run = p.add_argument_group("what the container runs with")
    run.add_argument(
        "--entrypoint",
        metavar="ARGS",
        help="replace the image's ENTRYPOINT (split like a shell line; \"\" clears it)",
    )
    run.add_argument(
        "-e",
        "--env",
        action="append",
        metavar="KEY=VALUE",
        help="set a variable (repeatable); KEY alone takes its value from your environment",
    )
    run.add_argument(
        "--env-file",
        action="append",
        metavar="FILE",
        help="variables from a file: KEY=VALUE lines, # comments (docker's format; repeatable)",
    )
    run.add_argument("--workdir", metavar="DIR", help="working directory (an absolute path)")
    run.add_argument(
        "--data",
        action="append",
        metavar="NAME",
        help="mount this dataset read-only at /data/NAME (repeatable; see `pink datasets`)",
    )
    run.add_argument(
        "--cpus", type=positive_number, help="CPUs, e.g. 4 or 0.5 (default: the worker's share)"
    )
    run.add_argument(
        "--memory", metavar="SIZE", help="memory limit: bytes or 512m, 16g (default: the worker's share)"
    )
    run.add_argument("--shm-size", metavar="SIZE", help="size of /dev/shm, e.g. 1g")
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pink",
        description="Run docker images on the GPU servers of a PINK cluster.",
        epilog="Exit codes: 0 ok, 1 job ended badly (--wait), 2 usage, 3 network/TLS, "
        "4 not logged in, 5 refused.",
    )
    parser.add_argument("--version", action="version", version=f"pink {__version__}")
    _add_globals(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _add_globals(common, suppress=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help_text: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(func=func, fmt="table")
        return p

    p = add("login", cmd_login, "log in and save an API token")
    p.add_argument(
        "server", nargs="?", metavar="URL", help="server URL, e.g. https://pink.example.org"
    )
    p.add_argument("--user", "-u", required=True)
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin",
    )

    add("logout", cmd_logout, "revoke and forget the saved token")

    p = add("submit", cmd_submit, "submit a docker image as a job")
    p.usage = "pink submit [IMAGE.tar | --image NAME] [options] [-- COMMAND [ARG ...]]"
    p.epilog = (
        "Everything after -- is the command the container runs instead of the image's CMD "
        "(an argv, no shell: -- sh -c '...' for one). Datasets are mounted read-only at "
        "/data/NAME, the --input at /in; the variables PINK sets are listed in docs/jobs.md."
    )
    p.add_argument(
        "tarball", nargs="?", metavar="IMAGE.tar", help="archive written by `docker save`"
    )
    p.add_argument(
        "--image",
        metavar="NAME",
        help="export this local docker image instead (skipped when a worker has it)",
    )
    run = _add_job_options(p)
    run.add_argument(
        "--input",
        metavar="PATH",
        help="a file or folder the job sees read-only at /in (sent only if no worker has it)",
    )
    arr = p.add_argument_group("job arrays: one upload, many jobs (docs/jobs.md)")
    arr.add_argument(
        "--array",
        metavar="RANGE",
        help="run the image once per index: 0-99, 1,3,5-7; %%N at the end: at most N at once "
        "(each job gets PINK_ARRAY_INDEX; use it with -- sh -c '... $PINK_ARRAY_INDEX')",
    )
    arr.add_argument(
        "--array-file",
        metavar="FILE",
        help="one job per line of FILE, each line split like a shell line into its command "
        "(with --array %%N: at most N at once)",
    )
    end = p.add_argument_group("when the job ends")
    end.add_argument(
        "--retry-lost", type=non_negative_int, metavar="N",
        help="if it ends LOST (its worker vanished), run it again, up to N times: only for "
             "jobs that are safe to run twice",
    )
    end.add_argument("--notify", action="store_true", help="e-mail me when it ends (see `pink notify`)")
    end.add_argument("--webhook", metavar="URL", help="POST its end as JSON to URL (on the site's allow-list)")
    p.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="resubmitting with the same key returns the same job",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait for the job to end, printing its log as it runs; exit 1 unless it SUCCEEDED",
    )
    p.add_argument(
        "--download", metavar="FILE", help="with --wait: download the output archive to FILE"
    )
    _add_format(p)

    p = add("resubmit", cmd_resubmit, "run an ended job again, from the image its worker holds")
    p.usage = "pink resubmit JOB [options] [-- COMMAND [ARG ...]]"
    p.epilog = (
        "Nothing is uploaded: the job's worker holds its image. Options given change the new "
        "job (-e adds to or replaces variables of the old environment); everything after -- "
        "is the new command. The new job links to the old one (resubmit_of)."
    )
    p.add_argument("job", metavar="JOB", help="the ended job to run again")
    _add_job_options(p)
    p.add_argument("--idempotency-key", metavar="KEY", help="resubmitting with the same key returns the same job")
    p.add_argument("--wait", action="store_true", help="wait for the job to end, printing its log; exit 1 unless it SUCCEEDED")
    p.add_argument("--download", metavar="FILE", help="with --wait: download the output archive to FILE")
    _add_format(p)

    p = add("rm", cmd_rm, "delete ended jobs: their record, output archive and log")
    p.add_argument("jobs", nargs="+", metavar="JOB")
    _add_format(p)

    p = add("ls", cmd_ls, "list jobs, newest first")
    p.add_argument("--state", type=str.upper, choices=STATE_NAMES, help="only jobs in this state")
    p.add_argument("--all", action="store_true", help="everyone's jobs (admins)")
    p.add_argument(
        "-x", "--expand", action="store_true",
        help="a line per job of an array too (default: one line per array with its counts)",
    )
    p.add_argument(
        "-n", "--limit", type=positive_int, default=50, help="at most this many (default 50), read page by page"
    )
    p.add_argument("--before", metavar="ID", help="only jobs older than job ID (the cursor `pink ls` prints)")
    _add_format(p)

    p = add("usage", cmd_usage, "jobs, GPU-hours, CPU-hours and bytes in/out per user or per day, of the jobs "
                                "that ended in a window (yours; admins: anyone's)")
    p.add_argument("--since", type=day, metavar="DATE", help="first day, YYYY-MM-DD UTC (default 29 days ago)")
    p.add_argument("--until", type=day, metavar="DATE", help="last day, YYYY-MM-DD UTC (default today)")
    p.add_argument("--user", metavar="NAME", help="only this user (admins; default: everyone for admins)")
    p.add_argument("--by", choices=("user", "day"), default="user", help="a row per user (default) or per day")
    _add_format(p)

    p = add("status", cmd_status, "show everything about a job, or an array and its jobs")
    p.add_argument("job", metavar="ID")
    _add_format(p)

    p = add("logs", cmd_logs, "print a job's log")
    p.add_argument("job", metavar="ID")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")

    p = add("cancel", cmd_cancel, "cancel a job, or every job of an array that has not ended (a running job "
                                  "still exports what it wrote)")
    p.add_argument("job", metavar="ID")
    p.add_argument("--discard", action="store_true", help="throw away what a running job wrote: no output archive")
    _add_format(p)

    p = add("reorder", cmd_reorder, "set a queued job's order among your own jobs (its user priority: "
                                    "higher starts first; other users' jobs are not passed)")
    p.add_argument("job", metavar="ID")
    p.add_argument("user_priority", type=int, metavar="N", help="-100..100 (0: as submitted by default)")
    _add_format(p)

    p = add("download", cmd_download, "download a job's output archive (resumes a partial one)")
    p.add_argument("job", metavar="ID")
    p.add_argument(
        "-o", "--file", metavar="FILE", help="where to save it (default pink-ID.tar.zst)"
    )

    p = add("workers", cmd_workers, "list the worker servers")
    _add_format(p)

    p = add("notify", cmd_notify, "show or set where job-end e-mails go")
    p.add_argument("--email", metavar="ADDR", help="send job-end e-mails to ADDR (jobs with --notify)")
    p.add_argument("--all", action="store_true", help="with --email: for every job of yours")
    p.add_argument("--off", action="store_true", help="no job-end e-mails")
    _add_format(p)

    p = add("datasets", cmd_datasets, "list the datasets jobs can mount, and their workers")
    _add_format(p)
    return parser


def _setup_logging(verbosity: int) -> None:
    if verbosity <= 0:
        return
    level = logging.DEBUG if verbosity >= 2 else logging.INFO
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("pink_client").setLevel(level)
    if verbosity < 2:
        logging.getLogger("urllib3").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    # `pink submit IMAGE.tar [options] -- COMMAND ARGS...`: what follows the first -- is the
    # job's command, options of its own included (no option of pink takes "--" as a value).
    command: list[str] | None = None
    if "--" in argv:
        at = argv.index("--")
        argv, command = argv[:at], argv[at + 1 :]
    try:
        args = parser.parse_args(argv)
        args.argv = command
        if command is not None and (args.func not in (cmd_submit, cmd_resubmit) or not command):
            parser.error("only `pink submit` and `pink resubmit` take a command after --, and it needs one")
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 for --help
        return (
            exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)
        )
    _setup_logging(args.verbose or 0)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"pink: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("pink: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `pink logs ID | head`: the reader left. Point stdout at /dev/null so the interpreter's
        # final flush does not print a second traceback.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
