"""The `fabric` command line: a thin adapter over the library.

Every command maps onto one library function. Errors fabric raises on purpose become a message
on stderr and exit code 1, never a traceback; usage errors exit 2 (click's convention).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click

from fabric import __version__
from fabric.config.loader import DEFAULT_CONFIG
from fabric.errors import FabricError, RuleError
from fabric.features.formats import FORMATS

if TYPE_CHECKING:
    from fabric.objects import Location

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])


def _json_default(value: object) -> str:
    """Encode what JSON lacks the way the API's encoder does (bytes as base64)."""
    if isinstance(value, bytes | bytearray | memoryview):
        import base64

        return base64.b64encode(bytes(value)).decode()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _handles_errors(func: F) -> F:
    """Turn FabricError into a clean message and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except FabricError as exc:
            lines = str(exc).splitlines() or [type(exc).__name__]
            click.echo(f"error: {lines[0]}", err=True)
            for line in lines[1:]:
                click.echo(f"error: {line}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:
            # A bug or an unforeseen environment problem: still no traceback for the user
            # (FABRIC_DEBUG=1 shows it), and only the exception's type and first line.
            if os.environ.get("FABRIC_DEBUG"):
                raise
            first = (str(exc).splitlines() or [""])[0][:300]
            click.echo(
                f"error: unexpected {type(exc).__name__}: {first} "
                "(set FABRIC_DEBUG=1 for the traceback and please report it)",
                err=True,
            )
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=DEFAULT_CONFIG,
    show_default=True,
    help="Project config file.",
)


@contextmanager
def _progress(enabled: bool = True) -> Iterator[Callable[[str, int, int | None], None]]:
    """A tqdm bar per stage, shown on stderr when it is a terminal (or always if forced)."""
    from tqdm import tqdm

    bars: dict[str, Any] = {}
    show = enabled and (sys.stderr.isatty() or os.environ.get("FABRIC_PROGRESS") == "1")

    def update(stage: str, advance: int, total: int | None) -> None:
        if not show:
            return
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(
                total=total,
                desc=stage,
                # Exports count spine rows: the bar shows rows/s and the time left.
                unit=" rows" if stage.startswith("export") else "it",
                unit_scale=True,
                leave=False,
                dynamic_ncols=True,
                file=sys.stderr,
            )
        elif total is not None and total != bar.total:
            bar.total = total  # an estimate made good (a CSV spine's rows)
        bar.update(advance)

    try:
        yield update
    finally:
        for bar in bars.values():
            bar.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="fabric")
def main() -> None:
    """fabric: resolve source records into entities, store each as its own SQLite
    micro-database, mask per role, and serve lookups over HTTP.

    Start with `fabric demo`, which builds a complete project from synthetic sources.
    Most commands read ./fabric.yaml; pass -c PATH for another project.
    """
    if click.get_current_context().invoked_subcommand != "serve":
        # psycopg logs at WARNING what it ignores while closing a connection the server
        # dropped (an executemany's pipeline, the pool's reconnects). A command's own error
        # already says the store does not answer, in one line; Python's last-resort handler
        # would print these as more lines. A server keeps them in its log.
        logging.getLogger("psycopg").setLevel(logging.ERROR)


#: The role whose masking policy applies to what a command prints or writes.
role_option = click.option(
    "--role", default=None, help="Role whose masking applies (default: default_role)."
)


def _location(ctx: click.Context, param: click.Parameter, value: str | None) -> Location | None:
    """An option's local file or ``s3://bucket/key`` object (:mod:`fabric.objects`)."""
    from fabric.errors import ConfigError
    from fabric.objects import parse_location

    if value is None:
        return None
    try:
        return parse_location(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _workers_option(help_text: str) -> Callable[[F], F]:
    """``--workers N``: processes, 1 to 64."""
    return click.option(
        "--workers", type=click.IntRange(1, 64), default=1, show_default=True, help=help_text
    )


def _customers_option(default: int) -> Callable[[F], F]:
    return click.option(
        "--customers",
        type=click.IntRange(1, 10_000_000),
        default=default,
        show_default=True,
        help="Number of distinct people in the synthetic sources.",
    )


_seed_option = click.option(
    "--seed",
    type=int,
    default=42,
    show_default=True,
    help="Random seed; the same seed (and Faker version) gives the same data.",
)
_source_url_option = click.option(
    "--source-url",
    default=None,
    help="Write the sources into this SQLAlchemy database (one schema per system where "
    "supported) instead of SQLite files.",
)


@main.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory for the SQLite files and ground_truth.csv.",
)
@_customers_option(1000)
@_seed_option
@_source_url_option
@_handles_errors
def generate(out: Path, customers: int, seed: int, source_url: str | None) -> None:
    """Generate synthetic CRM, billing, shop and support sources with realistic duplicates.

    The same person appears in several systems with variations (email case and spaces, phone
    formats, nicknames, typos, moved addresses, shared family emails); ground_truth.csv maps
    every record to its true person.
    """
    from fabric.sources.generate import generate_sources

    report = generate_sources(out, customers=customers, seed=seed, source_url=source_url)
    for table in report.tables:
        where = f"{table.schema}.{table.name}" if table.schema else table.name
        click.echo(f"{table.system}.{table.table}: {table.rows} rows -> {where}")
    click.echo(
        f"ground truth: {report.ground_truth} ({report.people} people, {report.seconds:.1f} s)"
    )


def _print_sync(report: Any) -> None:
    click.echo(
        f"sync run {report.run_id} ({report.mode}, {report.executor}): read "
        f"{report.rows_read} rows in "
        f"{report.seconds:.1f} s; entities: "
        + ", ".join(f"{n} {t}" for t, n in report.entities.items())
    )
    click.echo(
        f"  created {report.created}, updated {report.updated}, unchanged "
        f"{report.unchanged}, deleted {report.deleted}, merged {report.merged}, "
        f"split {report.split}"
    )
    if report.links_refused:
        click.echo(
            f"  {report.links_refused} candidate links refused by cannot_link or "
            "max_cluster_size (records kept apart); review the rules with `fabric resolve "
            "--explain` on an extract"
        )
    for table, count in report.orphans.items():
        click.echo(f"  warning: {count} rows of {table} have no parent row and were skipped")
    if report.materialized:
        click.echo(f"  feature vectors materialized: {_counts(report.materialized)}")
    if report.documents:
        click.echo(f"  masked documents materialized: {_counts(report.documents)}")


def _counts(counts: dict[str, int], what: str = "") -> str:
    """``{"customer_360": 3}`` as ``3 customer_360`` (then `` what``), comma-separated."""
    return ", ".join(f"{n} {name}{what}" for name, n in counts.items())


@main.command()
@config_option
@click.option(
    "--full",
    is_flag=True,
    help="Read every row and re-resolve and rewrite every entity; also removes records and "
    "entities gone from the sources.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Worker processes that compute match values, build and encrypt entities, patch "
    "thousands of them, and materialize the online store; with --executor dask and no "
    "--scheduler, the workers of the cluster started for the run.  [default: "
    "executor.workers in fabric.yaml, 1]",
)
@click.option(
    "--executor",
    "executor_kind",
    type=click.Choice(["local", "dask"]),
    default=None,
    help="Where the sync's tasks run: local processes, or a Dask cluster (the one at "
    "--scheduler, or one started on 127.0.0.1 for the run).  [default: executor.kind in "
    "fabric.yaml, local]",
)
@click.option(
    "--scheduler",
    metavar="tcp://HOST:PORT",
    default=None,
    help="A running Dask scheduler (implies --executor dask). tcp:// must be this machine's "
    "loopback: tasks carry source rows and keys; use tls:// for anything else (README).",
)
@_handles_errors
def sync(
    config_path: Path,
    full: bool,
    workers: int | None,
    executor_kind: Literal["local", "dask"] | None,
    scheduler: str | None,
) -> None:
    """Extract sources, resolve records into entities, build and store micro-databases.

    Incremental by default once a first sync has run: only rows at or past each table's
    watermark column are read, and only the entities they touch are re-resolved and rebuilt
    (merges and splits are recorded; merged-away ids keep answering). Deletions in sources
    are found by --full. Sources and rules are all checked, and every row needed is read,
    before anything is written: on any error the store is left as it was.

    The same tasks run inline, in local worker processes, or on a Dask cluster, and give
    the same store: `fabric sync --full --scheduler tcp://127.0.0.1:8786` after
    `dask scheduler --host 127.0.0.1` and `dask worker tcp://127.0.0.1:8786 --nthreads 1`.
    """
    from fabric.project import Project
    from fabric.sync import open_sync_executor, sync_project

    with (
        Project.open(config_path) as project,
        _progress() as progress,
        open_sync_executor(
            project, kind=executor_kind, workers=workers, scheduler=scheduler
        ) as executor,
    ):
        report = sync_project(
            project, full=full, progress=progress, workers=workers, executor=executor
        )
    _print_sync(report)


def _check_listen(host: str, port: int) -> None:
    """Fail with a clear message if the address cannot be bound, before starting workers."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(infos[0][4])
    except OSError as exc:
        _fail(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} "
            "(another server there? pass --port or --host)"
        )


#: ASGI servers `fabric serve` can run; the first is the default (see benchmarks/http_bench.py).
SERVERS = ("granian", "uvicorn")


def _serve(
    config_path: Path,
    host: str,
    port: int,
    workers: int,
    server: str = SERVERS[0],
    access_log: bool | None = None,
) -> None:
    from fabric.api.app import ACCESS_LOG_ENV, CONFIG_ENV

    _check_listen(host, port)
    os.environ[CONFIG_ENV] = str(config_path.resolve())
    if access_log is not None:
        os.environ[ACCESS_LOG_ENV] = "1" if access_log else "0"
    target = "fabric.api.app:app_from_env"
    from fabric.api.servers import run_granian, run_uvicorn

    run = run_granian if server == "granian" else run_uvicorn
    run(target, host, port, workers, factory=True)


@main.command()
@config_option
@click.option("--host", default=None, help="Address to bind (default: api.host, 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Port (default: api.port, 8000)."
)
@_workers_option("Server worker processes.")
@click.option(
    "--server",
    type=click.Choice(SERVERS),
    default=SERVERS[0],
    show_default=True,
    help="ASGI server (granian measured faster: benchmarks/http_bench.py).",
)
@click.option(
    "--access-log/--no-access-log",
    default=None,
    help="A line per request on standard error: key name, role, method, path, status, "
    "time; never a key or a query string (default: api.access_log, off).",
)
@_handles_errors
def serve(
    config_path: Path,
    host: str | None,
    port: int | None,
    workers: int,
    server: str,
    access_log: bool | None,
) -> None:
    """Serve the HTTP API for the project: entity lookups, lineage, feature vectors, export
    jobs, the catalog, reload (SIGHUP too), health, readiness and metrics."""
    from fabric.project import Project

    # Open and check everything here so errors are a clean message, not a worker crash.
    with Project.open(config_path) as project:
        project.prepare()
        api = project.config.api
    _serve(config_path, host or api.host, port or api.port, workers, server, access_log)


@main.command()
@click.argument("input_csv", metavar="INPUT.csv", type=click.Path(path_type=Path))
@click.option(
    "--rules",
    "rules_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Match rules file (YAML).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Where to write record_id,entity_id.",
)
@click.option(
    "--explain",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the links behind each cluster (and the refused ones).",
)
@click.option(
    "--id-column",
    default="record_id",
    show_default=True,
    help="Column that identifies each record.",
)
@click.option(
    "--entity",
    "entity_type",
    default=None,
    help="Entity type of the rules to use (needed when the file has several).",
)
@_handles_errors
def resolve(
    input_csv: Path,
    rules_path: Path,
    out: Path,
    explain: Path | None,
    id_column: str,
    entity_type: str | None,
) -> None:
    """Resolve the records of one CSV file into entities, to tune match rules.

    Fields read the columns named under the table `input` in the rules (or, without
    `columns`, the CSV columns of the fields' own names). Writes record_id,entity_id; with
    --explain, one row per link: the two records, the rule and each field's similarity.
    """
    from fabric.resolve.csvfile import resolve_csv

    report = resolve_csv(
        input_csv, rules_path, out, explain=explain, id_column=id_column, entity_type=entity_type
    )
    click.echo(
        f"{report.records} records -> {report.clusters} entities "
        f"({report.links} links, {report.refused} refused for review, "
        f"{report.pairs_compared} candidate pairs compared) in {report.seconds:.1f} s"
    )
    click.echo(f"wrote {out}" + (f" and {explain}" if explain else ""))


@main.group()
def entity() -> None:
    """Look at entities."""


@entity.command("show")
@config_option
@click.argument("entity_type")
@click.argument("entity_id")
@role_option
@click.option("--tables", default=None, help="Comma-separated tables to show.")
@_handles_errors
def entity_show(
    config_path: Path, entity_type: str, entity_id: str, role: str | None, tables: str | None
) -> None:
    """Print one entity as JSON, exactly as the API returns it for the role."""
    from fabric.project import Project
    from fabric.services.entities import EntityService, table_list

    with Project.open(config_path) as project:
        wanted = table_list(tables)
        doc = EntityService(project).document(entity_type, entity_id, role=role, tables=wanted)
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False, default=_json_default))


@main.command("export")
@config_option
@click.argument("view")
@click.option(
    "--spine",
    metavar="PATH|s3://BUCKET/KEY",
    callback=_location,
    default=None,
    help="CSV or Parquet with entity_id (an id or source:key), event_timestamp and labels; "
    "a local file or s3://bucket/key. Without it: every entity, as of now.",
)
@click.option(
    "--out",
    metavar="PATH|s3://BUCKET/KEY",
    callback=_location,
    required=True,
    help="The file to write: a local path, or s3://bucket/key (endpoint and credentials from "
    "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="Default: from --out's suffix, else parquet.",
)
@role_option
@_workers_option("Processes computing partitions of entities in parallel.")
@_handles_errors
def export(
    config_path: Path,
    view: str,
    spine: Location | None,
    out: Location,
    fmt: str | None,
    role: str | None,
    workers: int,
) -> None:
    """Export a feature view over a spine: a point-in-time-correct training set.

    Every feature of the row for time t is computed only from rows whose event time is
    strictly before t; labels pass through; output rows keep the spine's order. A key no
    entity holds is counted and gets the defaults with found=false. FILE.manifest.json beside
    the output records the view, rules, store state and spine it was made from.
    """
    from fabric.project import Project
    from fabric.services.export import export_view

    with Project.open(config_path) as project, _progress() as progress:
        report = export_view(
            project,
            view,
            out,
            spine=spine,
            fmt=fmt,
            role=role,
            workers=workers,
            progress=progress,
        )
    click.echo(
        f"wrote {report.rows} rows ({report.entities} entities, {report.not_found} keys not "
        f"found) to {report.out} in {report.seconds:.1f} s; manifest {report.manifest}"
    )


@main.group()
def store() -> None:
    """Check, measure and re-key the entity store."""


@store.command("verify")
@config_option
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=50,
    show_default=True,
    help="Faults to list (all are counted).",
)
@_handles_errors
def store_verify(config_path: Path, limit: int) -> None:
    """Check every stored entity; exit 1 listing each fault.

    Each blob is decrypted and decompressed, its image passes SQLite's integrity check, its
    _meta names the entity and version it is stored as, and the catalog agrees. States an
    interrupted sync leaves (an image committed before the catalog recorded it) are counted
    as notices, not faults: readers get the whole committed image and the next sync settles
    them.
    """
    from fabric.project import Project
    from fabric.services.verify import verify_store

    with Project.open(config_path) as project, _progress() as progress:
        report = verify_store(project, progress)
    keys = ", ".join(f"{n} under key {k}" for k, n in sorted(report.key_ids.items()))
    click.echo(f"checked {report.checked} entities" + (f" ({keys})" if keys else ""))
    for notice, count in sorted(report.notices.items()):
        click.echo(f"  notice: {count} {notice}")
    for fault in report.faults[:limit]:
        click.echo(f"fault: {fault}", err=True)
    if report.faults:
        more = len(report.faults) - limit
        _fail(
            f"{len(report.faults)} of {report.checked} entities failed verification"
            + (f" ({more} more not listed; --limit)" if more > 0 else "")
        )
    click.echo("ok: every entity verified")


@store.command("stats")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@_handles_errors
def store_stats(config_path: Path, as_json: bool) -> None:
    """Print entity counts and the store's sizes."""
    from fabric.project import Project
    from fabric.services.stats import store_figures

    with Project.open(config_path) as project:
        figures = store_figures(project)
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    for entity_type, count in figures["entities"].items():
        click.echo(f"{entity_type}: {count} entities")
    if figures["backend"] == "postgres":
        where = (
            f"in {figures['shards']} partitions on PostgreSQL "
            f"({figures['shard_file_bytes']:,} bytes in its tables, "
            f"{figures['bytes_per_entity']:,} per entity); catalog and online store there too"
        )
    else:
        where = (
            f"in {figures['shards']} shards ({figures['shard_file_bytes']:,} bytes on disk, "
            f"{figures['bytes_per_entity']:,} per entity); "
            f"catalog {figures['catalog_file_bytes']:,} bytes"
        )
    click.echo(
        f"store: {figures['stored_entities']} images, {figures['blob_bytes']:,} bytes of blobs "
        + where
    )
    last = figures["last_sync"]
    if last:
        click.echo(
            f"last sync: run {last['id']}, {last['status']}, {last['finished_at']}, "
            f"rules {last['rules_version']}"
        )


@store.command("copy")
@config_option
@click.option(
    "--to",
    "to",
    metavar="URL|DIR",
    default=None,
    help="The target: postgresql://USER:PASSWORD@HOST:PORT/DATABASE (the postgres backend), "
    "or a directory (the embedded store). A password on the command line is seen by other "
    "users of this machine: prefer --to-env.",
)
@click.option(
    "--to-env",
    "to_env",
    metavar="NAME",
    default=None,
    help="An environment variable holding the target.",
)
@_handles_errors
def store_copy(config_path: Path, to: str | None, to_env: str | None) -> None:
    """Copy the store (images, catalog, online store) to another backend, then verify it.

    Everything is copied sealed, as stored: nothing is decrypted. A copy stopped midway is
    taken up where it stopped when run again with the same target; a target holding another
    store is refused. Point store.backend (and store.url_env, or store.path) at the target
    once it is done.
    """
    from fabric.project import Project
    from fabric.services.copy import copy_store

    if (to is None) == (to_env is None):
        _fail("give the target with --to or --to-env (one of them)")
        return
    if to_env is not None:
        to = os.environ.get(to_env, "").strip()
        if not to:
            _fail(f"the environment variable {to_env} (--to-env) is not set")
            return
    assert to is not None
    with Project.open(config_path) as project, _progress() as progress:
        report = copy_store(project, to, progress)
    click.echo(
        f"copied {report.images} images ({report.partitions_skipped} partitions copied "
        f"before), {report.catalog_rows} catalog rows and {report.online_rows} online rows "
        f"to {report.target}"
    )
    checked = report.verified
    if checked.faults:
        for fault in checked.faults[:20]:
            click.echo(f"fault: {fault}", err=True)
        _fail(f"the copy at {report.target} has {len(checked.faults)} faults (listed above)")
    click.echo(f"verified: {checked.checked} entities at {report.target}")


@store.command("rotate-key")
@config_option
@click.option(
    "--resume",
    is_flag=True,
    help="Do not add a key: re-seal under the current one (after an interrupted rotation, "
    "or after putting a new key first in the environment variable).",
)
@_handles_errors
def store_rotate_key(config_path: Path, resume: bool) -> None:
    """Encrypt the store under a new key, then retire the old one.

    A new random key goes first in the key file (secrets.file) and every entity is
    re-encrypted under it, a batch per transaction. Until the end, old keys stay in the key
    file, so every entity opens at any moment; stop it any time and run it again with
    --resume. Keys are never printed: only their ids.
    """
    from fabric.project import Project
    from fabric.services.rotate import rotate_store_key

    with Project.open(config_path) as project, _progress() as progress:
        report = rotate_store_key(project, new_key=not resume, progress=progress)
    click.echo(
        f"store key {report.key_id}: re-encrypted {report.resealed} entities "
        f"({report.already} already under it)"
    )
    if report.retired:
        click.echo(f"retired key ids (removed from the key file): {', '.join(report.retired)}")
    if report.unused:
        click.echo(
            f"key ids no entity uses any more: {', '.join(report.unused)}; remove them from "
            "where they are configured"
        )


@main.group()
def rules() -> None:
    """Work with rule files."""


@rules.command("check")
@config_option
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@_handles_errors
def rules_check(config_path: Path, files: tuple[Path, ...]) -> None:
    """Validate rule files; exit 1 listing each problem with file, line and path.

    Without FILES: fabric.yaml and every rule file it names, with column names checked
    against the sources (or, if they cannot be reached, the schema of the last sync).
    With FILES: those masking or match files, checked against the project's schema when a
    fabric.yaml is at hand, on their own otherwise.
    """
    from fabric.project import Project
    from fabric.rules.check import check_rule_file

    if not files:
        with Project.open(config_path) as project:
            checked, against = project.check_rules()
        for path in checked:
            click.echo(f"ok: {path}")
        click.echo(f"column names checked against {against}")
        return
    key: bytes | None = None
    schema = None
    if config_path.exists():
        with Project.open(config_path) as project:
            key = project.secrets.master_key
            schema = project.known_schema()
    problems = []
    for path in files:
        try:
            kind = check_rule_file(path, key=key, schema=schema)
            click.echo(f"ok: {path} ({kind} rules)")
        except FabricError as exc:
            problems.append(str(exc))
    if problems:
        raise RuleError("\n".join(problems))


@rules.command("preview")
@config_option
@click.argument("entity_type")
@click.argument("entity_id")
@role_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_handles_errors
def rules_preview(
    config_path: Path, entity_type: str, entity_id: str, role: str | None, as_json: bool
) -> None:
    """Show one entity before and after the rules of a role, column by column.

    Clear values are shown: this is for stewards with the project's key file at hand, and the
    API offers nothing like it.
    """
    from fabric.project import Project
    from fabric.services.entities import EntityService

    with Project.open(config_path) as project:
        preview = EntityService(project).preview(entity_type, entity_id, role=role)
    if as_json:
        click.echo(json.dumps(preview, indent=2, ensure_ascii=False, default=_json_default))
        return
    click.echo(f"{entity_type} {preview['entity_id']}: policy {preview['policy']}")

    def shown(value: object) -> str:
        text = "null" if value is None else str(value).replace("\n", " ")
        return text if len(text) <= 60 else text[:57] + "..."

    for table, rows in preview["tables"].items():
        for number, row in enumerate(rows, 1):
            click.echo(f"\n{table} row {number}")
            width = max(len(c["column"]) for c in row)
            before_width = min(max(len(shown(c["before"])) for c in row), 60)
            for cell in row:
                click.echo(
                    f"  {cell['column']:<{width}}  {shown(cell['before']):<{before_width}}  ->  "
                    f"{shown(cell['after'])}  ({cell['op']})"
                )


@rules.command("reveal")
@config_option
@click.argument("value")
@click.option("--role", default=None, help="Your role: it must have detokenize: true.")
@click.option("--column", default=None, help="TYPE.TABLE.COLUMN the value was masked in.")
@click.option("--domain", default=None, help="The token's domain, instead of --column.")
@click.option("--policy", default=None, help="The policy that masked it (default: the default).")
@_handles_errors
def rules_reveal(
    config_path: Path,
    value: str,
    role: str | None,
    column: str | None,
    domain: str | None,
    policy: str | None,
) -> None:
    """Turn a token or an FPE ciphertext back into its value (roles with detokenize: true).

    A token (tok_...) opens in its domain: give --domain, or --column to use the column's.
    A format-preserving value needs --column: the policy's fpe operator for that column says
    how it was encrypted.
    """
    from fabric.project import Project
    from fabric.services.reveal import reveal

    with Project.open(config_path) as project:
        click.echo(reveal(project, value, role=role, column=column, domain=domain, policy=policy))


@rules.command("suggest")
@config_option
@click.option(
    "--rows",
    type=click.IntRange(1, 1_000_000),
    default=1000,
    show_default=True,
    help="Rows sampled from each source table.",
)
@click.option("--name", default="suggested", show_default=True, help="Name of the policy.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the policy to this file (default: print it).",
)
@_handles_errors
def rules_suggest(config_path: Path, rows: int, name: str, out: Path | None) -> None:
    """Scan source samples for personal data and print a masking policy covering it.

    Columns are judged by name (email, phone, card, iban, birth, name, street, zip...) and by
    sampled values (emails, phone numbers, Luhn-valid cards, mod-97 IBANs, free text holding
    them). Every column is listed, with the evidence as a comment; review it before use.
    """
    from fabric.files import write_private
    from fabric.project import Project
    from fabric.services.suggest import suggest_policy

    with Project.open(config_path) as project:
        text = suggest_policy(project, rows=rows, name=name)
    if out is None:
        click.echo(text, nl=False)
        return
    if out.exists():
        _fail(f"{out} exists; choose another --out (nothing was written)")
    write_private(out, text)  # it describes where the sources keep personal data
    click.echo(f"wrote {out}")


def _fabric_command() -> str:
    """How to run this very fabric again: the script beside this interpreter, if any."""
    script = Path(sys.executable).parent / "fabric"
    return str(script) if script.exists() else f"{sys.executable} -m fabric"


def _print_demo_help(project: Any, keys: dict[str, str], host: str, port: int) -> None:
    from fabric.demo import DEMO_ROLES

    catalog = project.catalog
    ids = catalog.sample_ids("customer", 1)
    base = f"http://{host}:{port}"
    click.echo("")
    click.echo(f"Demo project: {project.config.root}")
    click.echo(f"Entities: {catalog.count('customer')} customers in {project.store_dir}")
    click.echo("")
    click.echo("Try (one key per role, least privileged first):")
    click.echo(f"  curl -s {base}/health")
    entity_id = ids[0] if ids else "ID"
    for name, role, _, _ in DEMO_ROLES:
        key = keys.get(name)
        if key is None or role == "admin":
            continue
        auth = f"-H 'Authorization: Bearer {key}'"
        click.echo(f"  # as {role}:")
        click.echo(f"  curl -s {auth} {base}/v1/entities/customer/{entity_id}")
    key = keys.get(DEMO_ROLES[0][0])
    if key:
        click.echo(
            f"  curl -s -H 'Authorization: Bearer {key}' "
            f"'{base}/v1/entities/customer?source=crm&key=1'"
        )
        click.echo(
            f"  curl -s -H 'Authorization: Bearer {key}' "
            f"'{base}/v1/features/customer_360/{entity_id}?as_of=2026-06-01T00:00:00Z'"
        )
        click.echo(f"  curl -s -H 'Authorization: Bearer {key}' {base}/v1/catalog")
    admin = next((keys.get(name) for name, role, _, _ in DEMO_ROLES if role == "admin"), None)
    if admin:
        click.echo("  # as admin: reload fabric.yaml and the rules without stopping")
        click.echo(f"  curl -s -X POST -H 'Authorization: Bearer {admin}' {base}/v1/admin/reload")
    click.echo(f"  curl -s {base}/metrics | grep ^fabric_")
    click.echo("")
    click.echo("The same document from the command line:")
    click.echo(f"  {_fabric_command()} entity show -c {project.config.path} customer {entity_id}")
    click.echo("")


@main.command()
@_customers_option(10_000)
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=Path("demo"),
    show_default=True,
    help="Project directory (reused if it exists).",
)
@_seed_option
@_source_url_option
@click.option("--no-serve", is_flag=True, help="Stop after the sync and the summary.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8000,
    show_default=True,
    help="Port to serve on.",
)
@_handles_errors
def demo(
    customers: int,
    directory: Path,
    seed: int,
    source_url: str | None,
    no_serve: bool,
    host: str,
    port: int,
) -> None:
    """Generate synthetic sources, sync them, print example requests, then serve.

    Creates DIR/fabric.yaml (commented), DIR/rules/, a private key file DIR/fabric.keys with
    one API key per demo role, and the sources under DIR/sources/. Re-running reuses the
    project and keeps your edits.
    """
    from fabric.config.secrets import load_secrets
    from fabric.demo import SOURCE_URL_ENV, create_demo_project
    from fabric.project import Project
    from fabric.sync import sync_project

    if source_url is not None:
        os.environ.setdefault(SOURCE_URL_ENV, source_url)
    if (directory / "fabric.yaml").exists():
        click.echo(
            f"fabric demo: reusing the project in {directory}/ (--customers applies to "
            "new projects only)"
        )
    else:
        click.echo(f"fabric demo: {customers} customers in {directory}/ ...")
    created = create_demo_project(directory, customers=customers, seed=seed, source_url=source_url)
    if created.generation is not None:
        click.echo(f"generated sources in {created.generation.seconds:.1f} s")
    with Project.open(created.config_path) as project, _progress() as progress:
        report = sync_project(project, progress=progress)
        _print_sync(report)
        keys = load_secrets(project.config).api_keys
        _print_demo_help(project, keys, host, port)
    if not no_serve:
        click.echo(f"Serving on http://{host}:{port} (Ctrl-C to stop)")
        _serve(created.config_path, host, port, 1, access_log=True)


@main.command()
@config_option
@click.option(
    "--view",
    "view_names",
    multiple=True,
    help="Only this feature view (repeatable; default: every view, and masked documents).",
)
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Compute every entity's vector again, not only missing, stale or expired ones.",
)
@_workers_option("Processes that compute vectors and documents (this one writes them).")
@_handles_errors
def materialize(
    config_path: Path, view_names: tuple[str, ...], everything: bool, workers: int
) -> None:
    """Compute current feature vectors, and entity documents masked for each role's policy,
    into the online store, which the API serves from.

    `fabric sync` does this at its end for what it changed. Run it alone to refresh vectors
    whose horizon has passed (a row leaving a window, a day count ticking over) before
    requests ask for them, for example hourly from cron. The API serves a stored vector only
    for the entity version, view definition and times it holds for, and a stored document
    only for the entity version and masking rules and keys it was made with; it computes
    any other.
    """
    from fabric.project import Project
    from fabric.services.entities import EntityService
    from fabric.services.materialize import materialize as run_materialize

    with Project.open(config_path) as project, _progress() as progress:
        views = project.views()
        unknown = sorted(set(view_names) - set(views))
        if unknown:
            _fail(
                f"unknown feature view(s) {', '.join(unknown)} "
                f"(views: {', '.join(views) or 'none declared'})"
            )
        done = run_materialize(
            EntityService(project),
            project.online,
            views,
            only=list(view_names) or None,
            everything=everything,
            workers=workers,
            progress=progress,
        )
    written = [_counts(done.written), _counts(done.documents, " documents")]
    click.echo(
        f"materialized {', '.join(w for w in written if w)}; dropped {done.dropped} stale rows"
    )
