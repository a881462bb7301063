"""``pink``: the command-line client of the PINK web API (docs/api.md).

It runs on a user's laptop and needs only ``requests`` and ``tqdm`` (plus ``pink.states`` and
``pink.__version__``, two stdlib-only modules of the core). Every failure ends in one line on
stderr that says what went wrong and what to do next, and in one of the exit codes of
docs/api.md (see :mod:`pink_client.errors`).

Modules: ``errors`` (exit codes, exceptions), ``settings`` (config file, URL, token),
``http`` (the API session), ``output`` (formatting, messages, progress bars), ``archive``
(``docker save`` tarballs), ``jobs`` (submit, wait, download), ``inputs`` (``--input``: the
deterministic tar streamed from the files, sent once per worker), ``commands`` (one function per
subcommand) and ``main`` (the argument parser and entry point).
"""
