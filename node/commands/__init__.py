"""Sub-commands of `alpr-node`: one module each, with `register(subparsers)`.

`register` adds the sub-command's parser and sets `func` to a callable taking the parsed
arguments and returning the exit status.
"""
