"""``domarkx lsp``: a language server for session documents (docs/editors.md).

It sits at the top layer, beside ``domarkx.cli``: it uses the pipeline, the
session, parsing, configuration and data layers, and nothing imports it but
``domarkx.cli.cmd_lsp``. Only ``server`` imports pygls (the optional extra
``domarkx[lsp]``); ``document``, ``features`` and ``actions`` are the editor
features as plain functions over a document's text:

- ``document``: which documents are sessions, and the errors ``domarkx import``
  would report for a document's text (diagnostics);
- ``features``: code lenses, hover, completion and go to definition;
- ``actions``: what a code lens does (``chat``, ``chat --regenerate``, ``fork``,
  ``import`` + ``run``), with the editor as the terminal.
"""
