"""Export routes: start an export as a background job, watch it, fetch its file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from litestar import Response, get, post
from litestar.di import NamedDependency
from litestar.openapi.spec import Example
from litestar.params import Body, FromPath
from litestar.response import File

from fabric.api.context import Call

__all__ = ["ExportRequest", "export_file", "export_status", "start_export"]


@dataclass
class ExportRequest:
    """What to export: a view, over a spine in the server's spines directory (or every
    entity as of now), to a format. The caller's role decides the masking."""

    view: str
    spine: str | None = None
    format: Literal["parquet", "csv", "jsonl"] = "parquet"


@post(
    "/v1/exports",
    sync_to_thread=True,
    tags=["exports"],
    summary="Start an export as a background job",
    description=(
        "`spine` names a file inside the server's spines directory (`api.exports.spines`); "
        "without it, every entity as of now. The export is masked for the caller's role. At "
        "most `api.exports.max_running` run at once; the rest wait. Answers 202 with the job's "
        "status; `Location` is where to watch it."
    ),
    status_code=202,
)
def start_export(
    call: NamedDependency[Call],
    data: Annotated[
        ExportRequest,
        Body(examples=[Example(value={"view": "customer_360", "spine": "train.csv"})]),
    ],
) -> Response[dict[str, Any]]:
    """Queue the export and answer its status."""
    call.require("exports")
    caller = call.caller
    job = call.jobs.start(
        call.served.project, caller.key_name, caller.role, data.view, data.spine, data.format
    )
    return Response(job.status(), status_code=202, headers={"Location": f"/v1/exports/{job.id}"})


@get(
    "/v1/exports/{job:str}",
    sync_to_thread=False,
    tags=["exports"],
    summary="An export job's state, stage, rows done, rows/s and time left",
)
def export_status(job: FromPath[str], call: NamedDependency[Call]) -> dict[str, Any]:
    """Answer the job's status; 404 for another key's job."""
    call.require("exports")
    return call.jobs.get(call.caller.key_name, job).status()


@get(
    "/v1/exports/{job:str}/file",
    sync_to_thread=True,
    tags=["exports"],
    summary="The export's file, streamed, once the job succeeded (409 before)",
)
def export_file(job: FromPath[str], call: NamedDependency[Call]) -> File:
    """Stream the file."""
    call.require("exports")
    found = call.jobs.file(call.caller.key_name, job)
    return File(path=found.out, filename=found.out.name)
