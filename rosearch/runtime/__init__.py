"""What a process sets up once and shows while it runs: logging and its library filters (:mod:`.logs`),
progress bars (:mod:`.progress`), threads, device and seeds (:mod:`.settings`).

Empty on purpose: :mod:`.logs` and :mod:`.progress` stay free of torch for the command line, and
:mod:`.settings` imports it.
"""
