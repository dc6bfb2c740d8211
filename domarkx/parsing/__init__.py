"""Session documents to data: the Markdown parser and the macro expander."""
