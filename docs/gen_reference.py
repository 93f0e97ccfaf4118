"""The docs site's generated pages (run by mkdocs-gen-files at build time; nothing here is committed output).

- ``reference/openapi.json`` and ``reference/http-api.md``: the server's OpenAPI document, from
  ``server.api.app.create_app`` on the tiny model's settings. The model loads in the app's lifespan, which
  never starts here, so no weights are read and no ledger is opened.
- ``reference/cli.md``: every command's ``--help``, from the argparse parsers the commands themselves use.
- ``benchmarks/*.md``: the tables of ``bench/results/`` with their plots, and ``bench/README.md``, copied at
  build time so that the results are written in one place only.

``tests/test_docs.py`` imports :func:`parsers` and :func:`route_paths` to check that the hand-written pages
mention every flag and route; it imports this file without running :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
# Routes outside the OpenAPI document (include_in_schema=False), each shown as its app route's path.
UNDOCUMENTED_ROUTES = ("/openapi.json", "/docs", "/docs/assets")


def parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command line as (the command as typed, its parser), subcommands included, parents first."""
    from client.cli.commands import build_parser
    from server.admin.cli import _parser as admin_parser
    from server.flags import _build_parser as server_parser

    # An empty environment: the pages must not show the BLACKVIP_* values of the machine that built them.
    yield from _walk("blackvip", build_parser())
    yield from _walk("blackvip-server", server_parser({}))
    yield from _walk("blackvip-server", admin_parser({}))


def _walk(command: str, parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield command, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(f"{command} {name}", sub)


def flags(parser: argparse.ArgumentParser) -> list[str]:
    """The parser's own long options (``--help`` aside), as typed."""
    return [
        option
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction)
        for option in action.option_strings
        if option.startswith("--")
    ]


def openapi_document() -> dict[str, Any]:
    from server.api.app import create_app
    from server.settings import ServerSettings

    app = create_app(ServerSettings(model="tiny-vit", random_init=True))
    return app.openapi()


def route_paths(document: dict[str, Any] | None = None) -> list[str]:
    """Every path the server answers: the OpenAPI document's and the few it leaves out."""
    document = openapi_document() if document is None else document
    return [*document["paths"], *UNDOCUMENTED_ROUTES]


def http_page(document: dict[str, Any]) -> str:
    lines = [
        "# HTTP API",
        "",
        f"Generated from the server's OpenAPI document ({document['info']['title']}, protocol "
        f"{document['info']['version']}) when this site was built; the document itself is "
        "[openapi.json](openapi.json), and a running server serves it at `/openapi.json` with Swagger UI "
        "at `/docs`. What the routes mean, what is charged and the error body are in "
        "[Concepts](../concepts.md).",
        "",
    ]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            lines += _operation(method, path, operation)
    lines += ["## Schemas", ""]
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        lines += _schema(name, schema)
    lines += [
        "## Routes outside the document",
        "",
        "- `GET /openapi.json`: this document.",
        "- `GET /docs`: Swagger UI on it, its script and style served from `/docs/assets` (offline).",
        "",
    ]
    return "\n".join(lines)


def _operation(method: str, path: str, operation: dict[str, Any]) -> list[str]:
    lines = [f"## `{method.upper()} {path}`", ""]
    if operation.get("summary"):
        lines += [f"**{operation['summary']}**", ""]
    if operation.get("description"):
        lines += [operation["description"].replace("``", "`"), ""]
    schemes = [name for requirement in operation.get("security", []) for name in requirement]
    lines += [
        f"Auth: the API key, `Authorization: Bearer KEY` ({', '.join(schemes)})."
        if schemes
        else "Auth: none.",
        "",
    ]
    parameters = operation.get("parameters", [])
    if parameters:
        lines += ["| parameter | in | required | schema |", "|---|---|---|---|"]
        for parameter in parameters:
            schema = _type_of(parameter.get("schema", {}))
            required = "yes" if parameter.get("required") else "no"
            lines.append(f"| `{parameter['name']}` | {parameter['in']} | {required} | {schema} |")
        lines.append("")
    body = operation.get("requestBody", {}).get("content", {})
    for media, content in body.items():
        lines += [f"Request body: `{media}`, {_type_of(content.get('schema', {}))}", ""]
    lines += ["| status | answer | body |", "|---|---|---|"]
    for status, response in operation.get("responses", {}).items():
        contents = response.get("content", {})
        shapes = ", ".join(f"`{media}` {_type_of(c.get('schema', {}))}" for media, c in contents.items())
        description = response.get("description", "").replace("\n", " ").replace("|", "\\|")
        lines.append(f"| {status} | {description} | {shapes} |")
    return [*lines, ""]


def _schema(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", ""]
    if schema.get("description"):
        lines += [schema["description"].replace("``", "`"), ""]
    properties = schema.get("properties", {})
    if properties:
        required = set(schema.get("required", []))
        lines += ["| field | type | required |", "|---|---|---|"]
        for field, spec in properties.items():
            lines.append(f"| `{field}` | {_type_of(spec)} | {'yes' if field in required else 'no'} |")
        lines.append("")
    return lines


def _type_of(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return f"`{schema['$ref'].rsplit('/', 1)[-1]}`"
    for combiner in ("anyOf", "oneOf", "allOf"):
        if combiner in schema:
            return " or ".join(_type_of(option) for option in schema[combiner])
    if schema.get("type") == "array":
        return f"array of {_type_of(schema.get('items', {}))}"
    if "enum" in schema:
        return " \\| ".join(f"`{value}`" for value in schema["enum"])
    return f"`{schema.get('type', 'any')}`"


def cli_page() -> str:
    lines = [
        "# Command line",
        "",
        "Every command's `--help`, generated from the parsers the commands use when this site was built. "
        "Server flags also read `BLACKVIP_<FLAG>` environment variables "
        "([Operating the server](../server.md)).",
        "",
    ]
    seen: set[str] = set()
    for command, parser in parsers():
        text = parser.format_help().replace(parser.prog, command, 1)
        # blackvip-server is two parsers: the server's flags, and the admin commands (keys, ledger).
        heading = f"`{command}`" + (" (admin commands)" if command in seen else "")
        seen.add(command)
        lines += [f"## {heading}", "", "```text", text.rstrip(), "```", ""]
    return "\n".join(lines)


def benchmark_pages() -> dict[str, str | bytes]:
    """``benchmarks/NAME.md`` per results file, each with the plots whose names start with its own."""
    pages: dict[str, str | bytes] = {}
    index = [
        "# Benchmarks and results",
        "",
        "The results of the scripts in `bench/` ([how to run each](running.md), from `bench/README.md`), as "
        "committed in `bench/results/`; these pages are copied from there when the site is built.",
        "",
    ]
    guide = (ROOT / "bench" / "README.md").read_text()
    pages["benchmarks/running.md"] = guide.replace("# Benchmarks", "# Running the benchmarks", 1)
    for source in sorted(RESULTS.glob("*.md")):
        plots = sorted(RESULTS.glob(f"{source.stem}*.png"))
        body = source.read_text().rstrip()
        # A results file with a heading of its own keeps it as the page's title; the others get their name.
        first, _, rest = body.partition("\n")
        title = first[2:] if first.startswith("# ") else source.stem.replace("_", " ")
        body = rest.strip() if first.startswith("# ") else body
        text = [f"# {title}", "", f"From `bench/results/{source.name}`.", "", body, ""]
        for plot in plots:
            pages[f"benchmarks/{plot.name}"] = plot.read_bytes()
            text += [f"![{plot.stem}]({plot.name})", ""]
        pages[f"benchmarks/{source.name}"] = "\n".join(text)
        index.append(f"- [{title}]({source.name})" + (f" ({len(plots)} plots)" if plots else ""))
    pages["benchmarks/index.md"] = "\n".join([*index, ""])
    return pages


def main() -> None:
    import mkdocs_gen_files

    # argparse wraps --help to the terminal's width: fix it so that a build does not depend on the terminal.
    os.environ["COLUMNS"] = "100"
    document = openapi_document()
    pages: dict[str, str | bytes] = {
        "reference/openapi.json": json.dumps(document, indent=2),
        "reference/http-api.md": http_page(document),
        "reference/cli.md": cli_page(),
        **benchmark_pages(),
    }
    for name, content in pages.items():
        mode = "wb" if isinstance(content, bytes) else "w"
        with mkdocs_gen_files.open(name, mode) as handle:
            handle.write(content)


# mkdocs-gen-files runs this file with runpy (the name "<run_path>"); the docs test imports it as a module.
if __name__ in {"__main__", "<run_path>"}:
    main()
