"""The self-serve portal: browser sessions (``session``) and the pages' static files."""
