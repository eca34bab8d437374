"""The `station` command: `app` builds it from one module per command group.

Exit codes, for every command: 0 success; 1 the command ran and found a failure (a bad record, an
unreadable image, a refused action); 2 the command could not run as asked (bad configuration, bad
arguments, the data folder held by another station); 130 interrupted; 141 its output pipe was closed.
"""
