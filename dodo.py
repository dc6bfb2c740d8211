"""Build this repository's own sessions/ with domarkx's task graph.

`doit` builds every sessions/**/*.md up to its export in .domarkx/exports/;
`doit snapshot` stops after snapshots; `doit list --all` shows the tasks;
`domarkx build --check` (CI) fails when a committed export is out of date.
See docs/pipeline.md.
"""

from domarkx.pipeline.tasks import *  # noqa: F403
