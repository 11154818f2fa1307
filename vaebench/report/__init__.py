"""Reading documents back: inputs, tables, the Markdown and HTML page."""
