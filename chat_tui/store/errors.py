"""What the store raises. Its own module, so that code which only catches these
(the chat window, before anything is stored) does not load the records."""


class StoreError(Exception):
    """The database cannot be used; the message names the file and the cause."""


class StoreReplaced(StoreError):
    """The database file was deleted or replaced under us: stop, never write on."""
