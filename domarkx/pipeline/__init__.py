"""The doit task graph over ``sessions/**/*.md`` and the watch loop."""
