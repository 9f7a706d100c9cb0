"""The app through Pilot (``App.run_test()``) against the loopback fault server
(``server``) and a real database in ``tmp_path``; the snapshot tests of the main screens
(pictures in ``__snapshots__/test_snapshots/``, scenes in ``tests/scenes.py``).

Build an app with ``ChatApp(app_settings(server, tmp_path))`` and wait on what the screen
shows with ``wait_until(pilot, predicate)`` (both in ``tests/helpers.py``), never with a
fixed pause. No fixtures of this folder's own yet: add them here.
"""
