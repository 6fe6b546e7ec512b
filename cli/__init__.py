"""zoo's command line: a thin click front end over :mod:`zoo.api` (installed as zoo_cli)."""
