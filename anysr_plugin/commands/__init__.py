"""One module per ``anysr`` sub-command; each defines ``add_parser(subparsers)``."""
