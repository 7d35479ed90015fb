"""What a cluster job transcribes: local files, folders, glob patterns, list files and fsspec URLs,
each with the output name it is written under (the CLI's naming: paths below the inputs' shared folder)."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

LIST_SUFFIXES = frozenset({".txt", ".lst", ".list"})


@dataclass(frozen=True)
class Job:
    source: str  # a local path or an fsspec URL
    name: str  # output file name without the format suffix, relative to the output folder


def is_url(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


def _url_names(urls: Sequence[str]) -> list[str]:
    """Each URL's path below the URLs' shared prefix, without its suffix."""
    paths = [url.split("://", 1)[1] for url in urls]
    common = posixpath.commonpath(paths) if len(paths) > 1 else posixpath.dirname(paths[0])
    return [posixpath.splitext(posixpath.relpath(path, common))[0] for path in paths]


def collect_jobs(arguments: Sequence[str]) -> tuple[list[Job], list[str]]:
    """The jobs named by ``arguments`` and one error line per argument that named nothing.

    A file ending in .txt, .lst or .list is a list: one path or URL per line (blank lines and lines
    starting with # are skipped). Local inputs are named as ``funasr-nano transcribe`` names them.
    """
    from ..frontend.sources import expand_inputs, free_name

    local: list[str] = []
    urls: list[str] = []
    errors: list[str] = []
    for argument in arguments:
        if is_url(argument):
            urls.append(argument)
        elif Path(argument).suffix.lower() in LIST_SUFFIXES and Path(argument).is_file():
            lines = Path(argument).read_text(encoding="utf-8").splitlines()
            for line in (line.strip() for line in lines):
                if line and not line.startswith("#"):
                    (urls if is_url(line) else local).append(line.removeprefix("file://"))
        else:
            local.append(argument.removeprefix("file://"))
    jobs: list[Job] = []
    if local:
        inputs, local_errors = expand_inputs(local)
        errors.extend(local_errors)
        if any(item.path is None for item in inputs):
            raise UsageError("- (standard input) cannot be sent to a cluster: name files, folders or URLs")
        jobs.extend(Job(str(item.path), item.name) for item in inputs)
    if urls:
        taken = {job.name.casefold() for job in jobs}
        jobs.extend(Job(url, free_name(name, taken)) for url, name in zip(urls, _url_names(urls), strict=True))
    return jobs, errors


def read_source(source: str) -> str | bytes:
    """What :func:`~funasr_nano.frontend.audio.load_audio` takes: a local path as is, a URL's bytes through fsspec."""
    if not is_url(source):
        return source
    try:
        import fsspec
    except ImportError as exc:
        raise UsageError(f"{source}: reading URLs needs fsspec (pip install fsspec)") from exc
    with fsspec.open(source, "rb") as file:
        return file.read()
