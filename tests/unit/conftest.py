"""One module at a time, no server: backoff, sanitizing, offline-answer matching, the
store and its outbox on a real SQLite file (plus a model-based test), the fault server's
own self-tests and the import hygiene of the core. No fixtures of this folder's own yet:
add them here.
"""
