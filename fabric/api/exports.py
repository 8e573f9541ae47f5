"""Export routes: start an export as a background job, watch it, fetch its file."""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.exceptions import ClientException
from litestar.openapi.spec import Example
from litestar.params import Body, FromPath
from litestar.response import File, Stream

from fabric.api.context import Call
from fabric.api.jobs import SPINE_FORMATS
from fabric.api.schema import BEARER, ExportJobStatus, SpineUpload, answers
from fabric.errors import InvalidRequestError
from fabric.features.formats import ExportFormat
from fabric.objects import open_object

__all__ = ["ExportRequest", "export_file", "export_status", "start_export", "upload_spine"]

_STATUS: dict[str, Any] = {
    "job": "e3b0c44298fc",
    "view": "customer_360",
    "role": "analyst",
    "format": "parquet",
    "state": "running",
    "stage": "computing features",
    "rows_done": 40000,
    "rows_total": 100000,
    "rows_per_s": 91000.0,
    "eta_seconds": 0.7,
    "created_at": "2026-11-27T04:00:00+00:00",
    "started_at": "2026-11-27T04:00:00+00:00",
    "finished_at": None,
    "rows": None,
    "error": None,
}


@dataclass
class ExportRequest:
    """What to export: a view, over a spine (a file in the server's spines directory, or
    ``upload:<id>`` from `POST /v1/exports/spines`; without one, every entity as of now),
    to a format. The caller's role decides the masking."""

    view: str
    spine: str | None = None
    format: ExportFormat = "parquet"


@post(
    "/v1/exports",
    sync_to_thread=True,
    tags=["exports"],
    summary="Start an export as a background job",
    description=(
        "`spine` names a file inside the server's spines directory (`api.exports.spines`), "
        "or a spine this key uploaded (`upload:<id>`); without it, every entity as of now. "
        "The spine is checked before the job is queued: 400 for a missing column, a column "
        "named twice or named like one the export writes (`entity_id`, `event_timestamp`, "
        "`found`, `existed`, a feature), ignoring case and surrounding spaces, or a Parquet "
        "column in an encoding whose size does not bound what it decodes to "
        "(`DELTA_BYTE_ARRAY`: write PLAIN or dictionary); 413 past "
        "`api.exports.max_spine_rows`, `max_spine_decoded_bytes` or `max_spine_value_bytes`; "
        "404 for an upload deleted after `api.exports.keep_hours`. The export is masked for "
        "the caller's role. At most `api.exports.max_running` run at once; the rest wait. "
        "Answers 202 with the job's status; `Location` is where to watch it. A job fails as "
        "soon as its file would take the key past `api.exports.max_bytes_per_key`: it stops, "
        "and its file is deleted."
    ),
    status_code=202,
    security=BEARER,
    opt={"route": "exports"},
    responses=answers(ExportJobStatus, _STATUS, 400, 404, 413, status=202),
)
def start_export(
    request: Request[Any, Any, Any],
    data: Annotated[
        ExportRequest,
        Body(examples=[Example(value={"view": "customer_360", "spine": "train.csv"})]),
    ],
) -> Response[dict[str, Any]]:
    """Queue the export and answer its status."""
    call = Call.of(request)
    caller = call.caller
    job = call.jobs.start(
        call.project, caller.key_name, caller.role, data.view, data.spine, data.format
    )
    return Response(job.status(), status_code=202, headers={"Location": f"/v1/exports/{job.id}"})


@post(
    "/v1/exports/spines",
    tags=["exports"],
    summary="Upload a spine (CSV or Parquet) for exports of this key",
    description=(
        "The body is the file: `Content-Type: text/csv` or `application/vnd.apache.parquet`, "
        "at most `api.exports.max_spine_bytes`, and within what the key may hold "
        "(`api.exports.max_bytes_per_key`). It is checked at once: its columns and Parquet "
        "encodings (400) and what it decodes to (413 past `api.exports.max_spine_rows`, "
        "`max_spine_decoded_bytes` or `max_spine_value_bytes`). Answers 201 with the name "
        "to pass as `spine` to `POST /v1/exports` (`upload:<id>`); only this key can use it. "
        "Uploads are deleted `api.exports.keep_hours` after they are written, or when the "
        "server stops."
    ),
    status_code=201,
    request_max_body_size=None,  # bounded below by api.exports.max_spine_bytes
    security=BEARER,
    opt={"route": "exports"},
    responses=answers(
        SpineUpload,
        {"spine": "upload:9f86d081884c", "bytes": 20480, "format": "csv"},
        400,
        413,
        status=201,
    ),
)
async def upload_spine(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Store the body as a spine and answer ``{spine, bytes, format}``."""
    call = Call.of(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fmt = SPINE_FORMATS.get(content_type)
    if fmt is None:
        raise InvalidRequestError(
            f"Content-Type must be one of {', '.join(SPINE_FORMATS)} (the spine's format)"
        )
    jobs, limit = call.jobs, call.jobs.max_spine_bytes
    upload = jobs.new_upload(call.caller.key_name, fmt)
    size = 0
    try:
        with upload.path.open("ab") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ClientException(
                        f"the spine is larger than api.exports.max_spine_bytes ({limit:,} bytes)",
                        status_code=413,
                    )
                jobs.grow_upload(upload, len(chunk))
                await call.offload.run(out.write, chunk)
        if size == 0:
            raise InvalidRequestError("the spine is empty: send the file as the request body")
        # Reading a Parquet file's dictionaries may take a while: not on the serving thread.
        await asyncio.to_thread(jobs.check_upload, upload)
    except BaseException:
        jobs.drop_upload(upload)
        raise
    return {"spine": upload.name, "bytes": size, "format": fmt}


@get(
    "/v1/exports/{job:str}",
    sync_to_thread=False,
    tags=["exports"],
    summary="An export job's state, stage, rows done, rows/s and time left",
    security=BEARER,
    opt={"route": "exports"},
    responses=answers(ExportJobStatus, _STATUS, 404),
)
def export_status(job: FromPath[str], request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Answer the job's status; 404 for another key's job."""
    call = Call.of(request)
    return call.jobs.get(call.caller.key_name, job).status()


@get(
    "/v1/exports/{job:str}/file",
    sync_to_thread=True,
    tags=["exports"],
    summary="The export's file, streamed, once the job succeeded (409 before; 404 once "
    "deleted after api.exports.keep_hours)",
    security=BEARER,
    opt={"route": "exports"},
    responses=answers(None, None, 404, 409),
)
def export_file(job: FromPath[str], request: Request[Any, Any, Any]) -> File | Stream:
    """Stream the file (from S3 when ``api.exports.dir`` is there)."""
    call = Call.of(request)
    found = call.jobs.file(call.caller.key_name, job)
    if isinstance(found.out, Path):
        return File(path=found.out, filename=found.out.name)
    # Opened before the answer starts, so a storage that does not answer gets the JSON
    # error (503), not a response cut short.
    stack = contextlib.ExitStack()
    handle = stack.enter_context(open_object(found.out))

    def chunks() -> Iterator[bytes]:
        with stack:
            while chunk := handle.read(1 << 20):
                yield chunk

    return Stream(
        chunks(),
        media_type=mimetypes.guess_type(found.out.name)[0] or "application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{found.out.name}"'},
    )
