"""Build every sessions/**/*.md: run `doit` (or `domarkx build`) in this folder.

`doit list --all` shows the tasks: parse, expand, snapshot, run and export per
session; `doit snapshot` stops after snapshots. Exports land in
.domarkx/exports/<session>.md.
"""

from domarkx.pipeline.tasks import *  # noqa: F403
