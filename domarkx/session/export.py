"""Markdown export of a snapshot or an instance, through a jinja2 template.

The default template writes a document that imports back to the same
snapshot, and exporting that again gives the same bytes (spec section 5).
A user's own template gets the same context and filters.
"""

from __future__ import annotations

import contextlib
import functools
import json
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from domarkx import __version__
from domarkx.data.models import (
    CodeBlock,
    Message,
    OutputBlock,
    ScriptBlock,
    SessionInstance,
    SessionSnapshot,
    dump_config,
)
from domarkx.errors import DomarkxError, RefError
from domarkx.parsing.blocks import is_open_at_end, quote
from domarkx.parsing.fences import format_info, write_fence

if TYPE_CHECKING:
    import jinja2

    from domarkx.data.store import Store

DEFAULT_TEMPLATE = "session.md.j2"
# The part of the default template that writes messages; chat appends with it alone.
MESSAGES_TEMPLATE = "messages.md.j2"


def fence(text: str, info: str = "") -> str:
    """``text`` as a fenced block whose fence is longer than any fence inside it."""
    return write_fence(text, info)


def to_yaml(data: Any) -> str:
    import yaml  # ~57 ms at start-up; loaded only when a config is written as YAML

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(data, Dumper=dumper, sort_keys=False, allow_unicode=True, width=1000)


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def info_string(block: CodeBlock | OutputBlock | ScriptBlock) -> str:
    """The info string that reads back as ``block``'s language, attributes and flags."""
    if isinstance(block, ScriptBlock):
        return format_info(block.language, marker="setup-script")
    if isinstance(block, CodeBlock):
        return format_info(block.language, block.attrs, block.flags, name=block.name)
    attrs = dict(block.attrs)
    extra_flags = attrs.pop("flags", "").split()
    head: dict[str, str] = {}
    if block.stream != "stdout":
        head["stream"] = block.stream
    if block.exit_code is not None:
        head["exit_code"] = str(block.exit_code)
    flags = ["timed_out"] if block.timed_out else []
    return format_info(block.language, {**head, **attrs}, flags + extra_flags, marker="output")


def config_as_written(config: BaseModel) -> dict[str, Any]:
    """The config's set keys, with whole numbers in float settings as integers.

    ``timeout: 30`` is validated to ``30.0``; writing it back as ``30`` reads
    as the user wrote it and validates to the same value, so the id is the same.
    """
    data = dump_config(config)  # type: ignore[arg-type]
    _whole_floats(config, data)
    return data


def _whole_floats(model: BaseModel, data: dict[str, Any]) -> None:
    for name, field in type(model).model_fields.items():
        value = data.get(name)
        if isinstance(value, float) and value.is_integer():
            if field.annotation is float or float in typing.get_args(field.annotation):
                data[name] = int(value)
        elif isinstance(value, dict) and isinstance(getattr(model, name, None), BaseModel):
            _whole_floats(getattr(model, name), value)


@functools.lru_cache(maxsize=8)
def _environment(template_dir: Path | None) -> jinja2.Environment:
    """One environment per template folder: jinja2 keeps the compiled templates
    (and reloads a user's template when its file changes)."""
    import jinja2  # ~65 ms at start-up; loaded only when something is rendered

    loaders: list[Any] = [jinja2.PackageLoader("domarkx", "templates")]
    if template_dir is not None:
        loaders.insert(0, jinja2.FileSystemLoader(str(template_dir)))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        keep_trailing_newline=True,
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        bytecode_cache=_compiled_templates(),
    )
    env.filters.update(
        fence=fence, quote=quote, yaml=to_yaml, json=to_json, info_string=info_string
    )
    return env


def _compiled_templates() -> jinja2.BytecodeCache | None:
    """Templates compiled once per user, not once per process (~11 ms of each build
    that exports); None when there is no safe place for them.

    jinja2's own per-user folder in the temporary directory, which it checks is
    the user's alone: never a folder of the project (a project may come from
    anyone, and compiled code is run as it is). A template whose text changed
    is compiled again (jinja2 checks a digest of the source); the filters and
    options the code was compiled with are this domarkx's, hence its version in
    each file's name. A file that cannot be read or written is only not cached.
    """
    import jinja2  # reason: ~65 ms at start-up (as in _environment)
    from jinja2.bccache import Bucket  # reason: (the same)

    class Compiled(jinja2.FileSystemBytecodeCache):
        def load_bytecode(self, bucket: Bucket) -> None:
            try:
                super().load_bytecode(bucket)
            except (OSError, ValueError, EOFError, TypeError):  # a damaged file: compile
                bucket.reset()

        def dump_bytecode(self, bucket: Bucket) -> None:
            with contextlib.suppress(OSError):
                super().dump_bytecode(bucket)

    try:
        return Compiled(pattern=f"__domarkx_{__version__}_%s.cache")
    except (OSError, RuntimeError):  # jinja2 found no folder of this user's alone
        return None


def render(
    snapshot: SessionSnapshot,
    conversation: list[Message] | None = None,
    template: Path | None = None,
    instance: SessionInstance | None = None,
) -> str:
    """Markdown for ``snapshot`` (with an instance's ``conversation`` when given)."""
    preamble = snapshot.preamble
    text = _render(
        template.name if template else DEFAULT_TEMPLATE,
        template,
        front_matter=snapshot.metadata.user_metadata,
        preamble=preamble,
        # A preamble that ends inside an open block (a fence never closed) would
        # take in the config written after it: the default template writes it last.
        preamble_last=preamble is not None and is_open_at_end(preamble),
        config=config_as_written(snapshot.execution_config)
        if snapshot.execution_config is not None
        else None,
        config_format=snapshot.config_format,
        setup_script=snapshot.setup_script,
        # A run's setup output (what it printed, failed or not), else the document's own.
        setup_output=(instance.setup_output if instance is not None else [])
        or snapshot.setup_output,
        conversation=conversation if conversation is not None else snapshot.conversation,
        snapshot=snapshot,
        instance=instance,
    )
    return _tidy(text, bool(snapshot.metadata.user_metadata))


def render_messages(messages: list[Message]) -> str:
    """``messages`` as the default export writes them: ``## role`` sections, nothing else.

    Export writes a whole document's messages with the same template, so text
    appended with this reads back as export's would.
    """
    # They start with a `## role` heading: no first line to tell from front matter.
    return _tidy(_render(MESSAGES_TEMPLATE, None, conversation=messages), front_matter=True)


def _render(name: str, template: Path | None, **context: Any) -> str:
    """The template ``name`` (from ``template``'s folder, else the built-in ones) rendered."""
    import jinja2  # ~65 ms at start-up; loaded only when something is rendered

    env = _environment(template.parent if template else None)
    try:
        text = env.get_template(name).render(**context)
    except jinja2.TemplateNotFound as err:
        raise DomarkxError(f"template not found: {err.name}", file=template) from None
    except jinja2.TemplateSyntaxError as err:
        raise DomarkxError(
            f"template error: {err.message}", file=err.filename or template, line=err.lineno
        ) from None
    except jinja2.UndefinedError as err:
        raise DomarkxError(f"template error: {err.message}", file=template) from None
    return text


def _tidy(text: str, front_matter: bool) -> str:
    """No blank lines at the start and one newline at the end, whatever the template did.

    Blank lines in between are left alone: code and text are kept verbatim, and
    a run of blank lines inside them is part of the content (and of the id).
    Without front matter, a first line ``---`` (a rule in the preamble) keeps one
    blank line before it: first, it would open a front matter.
    """
    text = text.lstrip("\n").rstrip("\n") + "\n"
    if not front_matter and text.split("\n", 1)[0].rstrip() == "---":
        text = "\n" + text
    return text


def export_ref(store: Store, ref: str, template: Path | None = None) -> str:
    """Markdown of the instance or snapshot ``ref`` names.

    A tag names a snapshot; any other ref is tried as an instance first. The tag
    comes first because a session's name (`add`, `cafe`, `a`) can also be a
    prefix of some instance's hex id.
    """
    tags = store.tags()
    if ref in tags:
        return render(store.get_snapshot(tags[ref]), template=template)
    try:
        instance_id = store.resolve_instance(ref)
    except RefError:
        if ref and sum(i.startswith(ref) for i in store.instance_ids()) > 1:
            raise  # a prefix of several instances: the error lists them
        if (
            ref
            and not any(i.startswith(ref) for i in store.snapshot_ids())
            and not store.fetch_snapshot(ref)  # a whole id made elsewhere ([cache])
        ):
            raise RefError(
                f"no instance or snapshot matches {ref!r}",
                hint="`domarkx instances --all` and `domarkx snapshots` list them",
            ) from None
        return render(store.get_snapshot(store.resolve_snapshot(ref)), template=template)
    instance = store.get_instance(instance_id)
    snapshot = store.get_snapshot(instance.snapshot_id)
    return render(snapshot, instance.conversation, template, instance)
